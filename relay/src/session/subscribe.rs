//! Subscribing and unsubscribing, and the PostgreSQL work they schedule: replays from the
//! outbox and resyncs (a `resync` advisory plus a fresh snapshot).

use std::sync::Arc;

use tidewire_shared::message::{Advisory, AdvisoryKind, Subscribe};
use tidewire_shared::{ErrorCode, Filter, Position, ServerMessage, StreamKind, StreamName};

use super::view::View;
use super::{Json, Outgoing, RawStart, Session, SnapshotWork, SubscriptionState, Work};
use crate::bus::{self, Baseline, SubscribeError};
use crate::hub::Hub;
use crate::pg::listener::ListenError;
use crate::pg::outbox::{self, Head, OutboxError};
use crate::pg::snapshot::{snapshot_frame, Failure, PageKey};

/// What the baseline read decided.
#[derive(Debug)]
enum Plan {
    /// Replay from the client's `since` up to `until` (the head when the read happened).
    Replay { until: u64 },
    /// Send a snapshot as of `at`, then replay up to `head` (the baseline's position is
    /// `at`); first a `resync` advisory with this reason if the client's position was unusable.
    Snapshot {
        at: u64,
        head: u64,
        resync: Option<String>,
    },
    /// Start live at the head, without history.
    Live,
}

#[derive(Debug, thiserror::Error)]
enum BaselineError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

impl Session {
    pub(super) async fn subscribe(&mut self, subscribe: Subscribe) {
        let stream = subscribe.stream.clone();
        let asked = match subscribe.parsed_filter() {
            Ok(asked) => asked,
            Err(error) => {
                self.push_error(None, Some(stream), error.error_code(), error.to_string());
                return;
            }
        };
        let access = self.grant.permissions.read_access(&stream);
        let filter = match access.view(asked.clone()) {
            Ok(filter) if filter.is_none() || stream.kind() == StreamKind::Durable => filter,
            Ok(_) | Err(_) => {
                self.push_error(
                    None,
                    Some(stream.clone()),
                    ErrorCode::Forbidden,
                    format!("no read access to {stream}"),
                );
                return;
            }
        };
        let already = self.subscriptions.contains_key(&stream);
        if !already && self.subscriptions.len() >= self.hub.config.options.max_subscriptions {
            self.push_error(
                None,
                Some(stream),
                ErrorCode::TooManySubscriptions,
                format!(
                    "at most {} subscriptions per connection",
                    self.hub.config.options.max_subscriptions
                ),
            );
            return;
        }
        if already {
            // A re-subscribe restarts the stream from the client's new position.
            self.cursor.forget(stream.as_str());
            self.pending.retain(|work| work.stream() != &stream);
        }
        match stream.kind() {
            StreamKind::Durable => self.subscribe_durable(subscribe, asked, filter).await,
            StreamKind::Raw => self.subscribe_raw(subscribe).await,
        }
    }

    async fn subscribe_raw(&mut self, subscribe: Subscribe) {
        let stream = subscribe.stream;
        let id = self.receiver.id();
        if let Err(error) = self.hub.bus.registry().subscribe(id, stream.as_str()) {
            self.push_error(None, Some(stream), ErrorCode::Internal, error.to_string());
            return;
        }
        if let Err(error) = self.hub.listener.ensure_listening(&stream).await {
            self.rollback(&stream);
            self.push_error(
                None,
                Some(stream),
                ErrorCode::Unavailable,
                error.to_string(),
            );
            return;
        }
        // Raw notifications have no history: tell a resuming client now what it missed (the
        // next delivery may be far away), then start at the first delivery.
        let epoch = self.hub.boot_epoch;
        let head = self.hub.listener.raw_head(&stream);
        let missed = match subscribe.since {
            Some(since) if since.epoch != epoch => Some(Advisory {
                from: Some(since.seq + 1),
                ..Advisory::new(AdvisoryKind::Gap)
                    .stream(stream.clone())
                    .epoch(since.epoch)
                    .reason("the relay restarted since your position; raw notifications sent meanwhile are gone")
            }),
            Some(since) if head > since.seq => Some(
                Advisory::new(AdvisoryKind::Gap)
                    .stream(stream.clone())
                    .epoch(epoch)
                    .range(since.seq + 1, head)
                    .reason("raw notifications sent while you were away are gone"),
            ),
            _ => None,
        };
        if let Some(advisory) = missed {
            self.push(&ServerMessage::Advisory(advisory));
        }
        let start = match subscribe.since {
            Some(since) if since.epoch == epoch => RawStart::Since(Position {
                epoch,
                seq: head.max(since.seq),
            }),
            _ => RawStart::Fresh { head },
        };
        self.subscriptions.insert(
            stream.clone(),
            SubscriptionState {
                kind: StreamKind::Raw,
                raw_pending: Some(start),
                raw_gap_after: 0,
                asked: None,
                view: None,
            },
        );
        self.push(&ServerMessage::Subscribed {
            stream: stream.clone(),
            epoch: self.hub.boot_epoch,
            seq: 0,
            resumed: matches!(start, RawStart::Since(since) if since.epoch == self.hub.boot_epoch),
        });
        self.push_presence(&stream);
    }

    async fn subscribe_durable(
        &mut self,
        subscribe: Subscribe,
        asked: Option<Filter>,
        filter: Option<Arc<Filter>>,
    ) {
        let stream = subscribe.stream.clone();
        let hub = Arc::clone(&self.hub);
        let id = self.receiver.id();
        let viewed = filter.is_some();
        let read = |_outcome| async {
            hub.listener.ensure_listening(&stream).await?;
            read_baseline(&hub, &subscribe, viewed).await
        };
        let subscribed = hub
            .bus
            .subscribe_with(&mut self.cursor, id, stream.as_str(), filter.clone(), read)
            .await;
        let baseline = match subscribed {
            Ok(subscribed) => subscribed.baseline,
            Err(SubscribeError::Baseline {
                source,
                last_for_stream,
            }) => {
                if last_for_stream {
                    hub.listener.release(&stream);
                }
                let code = match &source {
                    BaselineError::Outbox(OutboxError::Rejected(_)) => ErrorCode::BadStream,
                    _ => ErrorCode::Unavailable,
                };
                tracing::debug!(%stream, error = %source, "subscribe failed");
                self.push_error(None, Some(stream), code, source.to_string());
                return;
            }
            Err(error) => {
                self.push_error(None, Some(stream), ErrorCode::Internal, error.to_string());
                return;
            }
        };
        let position = Position {
            epoch: baseline.position.epoch,
            seq: baseline.position.seq,
        };
        self.subscriptions.insert(
            stream.clone(),
            SubscriptionState {
                kind: StreamKind::Durable,
                raw_pending: None,
                raw_gap_after: 0,
                asked,
                view: filter.map(|filter| View {
                    filter,
                    sent: position.seq,
                }),
            },
        );
        match baseline.value {
            Plan::Replay { until } => {
                self.pending.push_back(Work::Replay {
                    stream,
                    epoch: position.epoch,
                    after: position.seq,
                    until: Some(until),
                    announce: Some(true),
                });
            }
            Plan::Snapshot { at, head, resync } => {
                if let Some(reason) = resync {
                    self.hub.metrics.resync();
                    self.push(&ServerMessage::Advisory(
                        Advisory::new(AdvisoryKind::Resync)
                            .stream(stream.clone())
                            .epoch(position.epoch)
                            .reason(reason),
                    ));
                }
                self.pending
                    .push_back(Work::snapshot(stream, position.epoch, at, head));
            }
            Plan::Live => self.announce(&stream, position, false),
        }
    }

    /// A refreshed token. A subscription the new grant no longer covers ends (`forbidden`, then
    /// `unsubscribed`); one whose filter changes restarts from a fresh snapshot after a
    /// `resync` advisory, so records the client may no longer see leave its collection.
    pub(super) fn regrant(&mut self, grant: crate::auth::Grant) {
        self.grant = grant;
        let streams: Vec<StreamName> = self.subscriptions.keys().cloned().collect();
        for stream in streams {
            let Some(subscription) = self.subscriptions.get(&stream) else {
                continue;
            };
            let access = self.grant.permissions.read_access(&stream);
            let view = match access.view(subscription.asked.clone()) {
                Ok(filter) if filter.is_none() || stream.kind() == StreamKind::Durable => filter,
                Ok(_) | Err(_) => {
                    self.unsubscribe(&stream, false);
                    self.push_error(
                        None,
                        Some(stream.clone()),
                        ErrorCode::Forbidden,
                        format!("your new token no longer grants {stream}"),
                    );
                    self.push(&ServerMessage::Unsubscribed { stream });
                    continue;
                }
            };
            let current = subscription.view.as_ref().map(|view| &*view.filter);
            if current == view.as_deref() {
                continue;
            }
            let sent = self
                .cursor
                .position(stream.as_str())
                .map_or(0, |position| position.seq);
            let registered = self.hub.bus.registry().subscribe_view(
                self.receiver.id(),
                stream.as_str(),
                view.clone(),
            );
            if let Err(error) = registered {
                tracing::warn!(%stream, %error, "re-subscribing after a token refresh failed");
            }
            if let Some(subscription) = self.subscriptions.get_mut(&stream) {
                subscription.view = view.map(|filter| View { filter, sent });
            }
            self.schedule_resync(&stream, "your grant changed");
        }
    }

    fn rollback(&mut self, stream: &StreamName) {
        let undone = self
            .hub
            .bus
            .registry()
            .unsubscribe(self.receiver.id(), stream.as_str());
        if undone.is_ok_and(|undone| undone.last_for_stream) {
            self.hub.listener.release(stream);
        }
    }

    /// Sends one page of a snapshot as the next `snapshot` chunk (a view's: only the
    /// records it matches, and no chunk for a page with none but the last), then queues the
    /// next page; after the last, announces `subscribed` at the snapshot's position and
    /// replays what was committed after it.
    async fn send_snapshot_page(&mut self, work: SnapshotWork) {
        let SnapshotWork {
            stream,
            epoch,
            at,
            head,
            after,
            chunk,
        } = work;
        let key = PageKey {
            stream: stream.clone(),
            epoch,
            at,
            after,
            limit: self.hub.config.options.snapshot_chunk,
        };
        let read = self.hub.snapshots.page(&self.hub.pool, &key, chunk).await;
        self.pending.pop_front();
        let page = match read {
            Ok(page) => page,
            Err(error) => {
                match error.failure() {
                    Failure::Expired(reason, _) => self.schedule_resync(&stream, reason),
                    Failure::Outbox(outbox) => self.on_work_failed(&stream, outbox),
                }
                return;
            }
        };
        let last = page.next().is_none();
        let filter = self
            .subscriptions
            .get(&stream)
            .and_then(|subscription| subscription.view.as_ref())
            .map(|view| Arc::clone(&view.filter));
        let frame = match filter {
            None => Some(page.frame(&stream, epoch, at, chunk)),
            Some(filter) => {
                let (records, count) = page.filtered(&filter);
                (count > 0 || last)
                    .then(|| snapshot_frame(&stream, epoch, at, chunk, last, &records))
            }
        };
        let next_chunk = if frame.is_some() {
            chunk.saturating_add(1)
        } else {
            chunk
        };
        if let Some(frame) = frame {
            self.out.push(Outgoing::Frame {
                json: Json::Own(frame),
                position: None,
                committed_at: None,
            });
        }
        match page.next() {
            Some(next) => self.pending.push_front(Work::Snapshot(SnapshotWork {
                stream,
                epoch,
                at,
                head,
                after: Some(Arc::clone(next)),
                chunk: next_chunk,
            })),
            None => {
                self.announce(&stream, Position { epoch, seq: at }, false);
                if head > at {
                    self.schedule_replay(&stream, epoch, at, Some(head));
                }
            }
        }
    }

    fn announce(&mut self, stream: &StreamName, position: Position, resumed: bool) {
        if let Some(view) = self
            .subscriptions
            .get_mut(stream)
            .and_then(|subscription| subscription.view.as_mut())
        {
            view.sent = position.seq;
        }
        let message = ServerMessage::Subscribed {
            stream: stream.clone(),
            epoch: position.epoch,
            seq: position.seq,
            resumed,
        };
        self.out.push(Outgoing::Frame {
            json: Json::Own(message.encode().into()),
            position: Some((stream.clone(), position)),
            committed_at: None,
        });
        self.push_presence(stream);
    }

    /// Sends the stream's whole presence set (`full: true`) right after `subscribed`.
    fn push_presence(&mut self, stream: &StreamName) {
        self.push(&ServerMessage::Presence {
            stream: stream.clone(),
            present: self.hub.presence.members(stream),
            left: Vec::new(),
            full: true,
        });
    }

    pub(super) fn unsubscribe(&mut self, stream: &StreamName, answer: bool) {
        if self.subscriptions.remove(stream).is_none() {
            if answer {
                self.push_error(
                    None,
                    Some(stream.clone()),
                    ErrorCode::NotSubscribed,
                    format!("not subscribed to {stream}"),
                );
            }
            return;
        }
        self.cursor.forget(stream.as_str());
        self.pending.retain(|work| work.stream() != stream);
        self.rollback(stream);
        self.hub
            .presence
            .leave(&self.presence_id(), Some(stream), &self.hub.tracker);
        if answer {
            self.push(&ServerMessage::Unsubscribed {
                stream: stream.clone(),
            });
        }
    }

    pub(super) fn schedule_replay(
        &mut self,
        stream: &StreamName,
        epoch: u64,
        after: u64,
        until: Option<u64>,
    ) {
        let already = self.pending.iter().any(|work| work.stream() == stream);
        if !already {
            self.pending.push_back(Work::Replay {
                stream: stream.clone(),
                epoch,
                after,
                until,
                announce: None,
            });
        }
    }

    pub(super) fn schedule_resync(&mut self, stream: &StreamName, reason: &str) {
        self.pending.retain(|work| work.stream() != stream);
        self.pending.push_back(Work::Resync {
            stream: stream.clone(),
            reason: reason.to_owned(),
        });
    }

    /// Does the first pending work item. It is only removed once done, so a cancelled call
    /// repeats it (cancel safety of [`Session::next`]).
    pub(super) async fn do_work(&mut self, work: Work) {
        if !self.subscriptions.contains_key(work.stream()) {
            self.pending.pop_front();
            return;
        }
        match work {
            Work::Replay {
                stream,
                epoch,
                after,
                until,
                announce,
            } => {
                let read = self
                    .hub
                    .replay
                    .read(&self.hub.pool, &stream, epoch, after)
                    .await;
                let mut page = match read {
                    Ok(page) => page,
                    Err(error) => {
                        self.pending.pop_front();
                        self.on_work_failed(&stream, &error);
                        return;
                    }
                };
                self.pending.pop_front();
                tracing::debug!(
                    connection = %self.receiver.id(),
                    %stream,
                    after,
                    frames = page.frames().len(),
                    more = page.more(),
                    "replay page read"
                );
                let mut last = after;
                for frame in page.frames() {
                    if frame.seq != last + 1 {
                        // Retention trimmed events the client still needs.
                        self.schedule_resync(
                            &stream,
                            "your position is older than the stream's retention",
                        );
                        return;
                    }
                    last = frame.seq;
                }
                let already_sent = self
                    .cursor
                    .position(stream.as_str())
                    .map_or(0, |position| position.seq);
                // The page is contiguous from `after + 1`: what was already sent is a prefix.
                let sent =
                    usize::try_from(already_sent.saturating_sub(after)).unwrap_or(usize::MAX);
                page.skip(sent);
                let more = page.more();
                self.replay_page(&stream, epoch, page);
                if last > already_sent {
                    self.cursor
                        .start(Arc::clone(stream.as_arc()), bus::Position::new(epoch, last));
                }
                let done = !more || until.is_some_and(|until| last >= until);
                if done {
                    if let Some(resumed) = announce {
                        self.announce(&stream, Position { epoch, seq: last }, resumed);
                    }
                } else {
                    self.pending.push_front(Work::Replay {
                        stream,
                        epoch,
                        after: last,
                        until,
                        announce,
                    });
                }
            }
            Work::Resync { stream, reason } => {
                let read = snapshot_start(&self.hub, &stream).await;
                self.pending.pop_front();
                match read {
                    Ok((head, at)) => {
                        self.cursor.start(
                            Arc::clone(stream.as_arc()),
                            bus::Position::new(head.epoch, at),
                        );
                        self.push(&ServerMessage::Advisory(
                            Advisory::new(AdvisoryKind::Resync)
                                .stream(stream.clone())
                                .epoch(head.epoch)
                                .reason(reason),
                        ));
                        self.pending
                            .push_front(Work::snapshot(stream, head.epoch, at, head.seq));
                    }
                    Err(error) => self.on_work_failed(&stream, &error),
                }
            }
            Work::Snapshot(snapshot) => self.send_snapshot_page(snapshot).await,
        }
    }

    /// Queues a replayed page: shared as it is, or judged frame by frame for a view.
    fn replay_page(
        &mut self,
        stream: &StreamName,
        epoch: u64,
        page: crate::pg::replay_cache::Page,
    ) {
        let Some(view) = self
            .subscriptions
            .get_mut(stream)
            .and_then(|subscription| subscription.view.as_mut())
        else {
            self.out.push_replay(stream.clone(), epoch, page);
            return;
        };
        for frame in page.frames() {
            let at = super::view::At {
                stream,
                epoch,
                seq: frame.seq,
            };
            let Some(change) = super::view::replayed_change(&frame.json, frame.prior.as_ref())
            else {
                // The relay encoded this frame itself: one that does not decode is a bug.
                tracing::error!(%stream, seq = frame.seq, "a replayed frame does not decode");
                continue;
            };
            let Some(json) =
                super::view::event_frame(&view.filter, &at, &frame.json, &change, view.sent)
            else {
                continue;
            };
            view.sent = frame.seq;
            self.out.push(Outgoing::event(
                Json::Own(json),
                stream,
                epoch,
                frame.seq,
                frame.ts,
            ));
        }
    }

    /// PostgreSQL failed during a replay or resync: drop the subscription and tell the client,
    /// which resubscribes from its position (nothing is lost: the outbox still has it).
    fn on_work_failed(&mut self, stream: &StreamName, error: &OutboxError) {
        tracing::debug!(%stream, %error, "replay failed; dropping the subscription");
        self.unsubscribe(stream, false);
        self.push_error(
            None,
            Some(stream.clone()),
            ErrorCode::Unavailable,
            format!("catching up {stream} failed ({error}); subscribe again from your position"),
        );
        self.push(&ServerMessage::Unsubscribed {
            stream: stream.clone(),
        });
    }
}

/// Where a new snapshot of `stream` starts: the stream's head (created if missing) and the
/// seq to read it as of (shared with snapshots started moments ago, see
/// [`crate::pg::snapshot::Starts`]).
pub(crate) async fn snapshot_start(
    hub: &Hub,
    stream: &StreamName,
) -> Result<(Head, u64), OutboxError> {
    let head = outbox::ensure_head(&hub.pool, stream).await?;
    Ok((head, hub.snapshot_starts.position(stream, head)))
}

/// Reads the baseline of a durable subscription (a view when `viewed`): a replay plan, a
/// snapshot's position, or the head.
async fn read_baseline(
    hub: &Hub,
    subscribe: &Subscribe,
    viewed: bool,
) -> Result<Baseline<Plan>, BaselineError> {
    let stream = &subscribe.stream;
    let snapshot_baseline = |(head, at): (Head, u64), resync: Option<String>| Baseline {
        position: bus::Position::new(head.epoch, at),
        value: Plan::Snapshot {
            at,
            head: head.seq,
            resync,
        },
    };
    match subscribe.since {
        Some(since) => {
            let head = outbox::ensure_head(&hub.pool, stream).await?;
            let resumable = if viewed {
                head.can_resume_view(since)
            } else {
                head.can_resume(since)
            };
            if resumable {
                return Ok(Baseline {
                    position: bus::Position::new(since.epoch, since.seq),
                    value: Plan::Replay { until: head.seq },
                });
            }
            let reason = if since.epoch != head.epoch {
                "your epoch is not the stream's (dropped, recreated or another database)"
            } else if since.seq > head.seq {
                "your position is ahead of the stream's head"
            } else if since.seq < head.min_seq {
                "your position is older than the stream's retention"
            } else {
                "your position is older than the pre-images a filtered subscription is judged on (events stored before the upgrade to views)"
            };
            let start = (head, hub.snapshot_starts.position(stream, head));
            Ok(snapshot_baseline(start, Some(reason.to_owned())))
        }
        None if subscribe.snapshot => {
            Ok(snapshot_baseline(snapshot_start(hub, stream).await?, None))
        }
        None => {
            let head = outbox::ensure_head(&hub.pool, stream).await?;
            Ok(Baseline {
                position: bus::Position::new(head.epoch, head.seq),
                value: Plan::Live,
            })
        }
    }
}
