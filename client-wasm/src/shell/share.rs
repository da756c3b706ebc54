//! The shell's part in sharing a connection between tabs: joining the group, switching
//! between guest and host, and carrying the protocol between the engine, the host and the
//! group (see `crate::share`).

use std::rc::{Rc, Weak};

use wasm_bindgen::JsValue;

use crate::browser::now;
use crate::engine::effect::Effect;
use crate::engine::CloseInfo;
use crate::share::group::{Group, Note, Ports, Role, WORKER_ID};
use crate::share::host::{Host, Out};

use super::{drive, forget_messages, receive, Connection, Inner, Shared, Sharing};

impl Inner {
    /// Joins the tabs of this relay and token (if the browser can), as `self.sharing` says:
    /// the engine starts as a guest of the shared worker (configured with the client's URL
    /// and options, as JSON), or of the elected tab, and becomes the host if it wins the
    /// election.
    pub(super) fn join_group(&mut self, weak: &Weak<Shared>) {
        let (sharing, config) = self.sharing.clone();
        let use_worker = sharing == Sharing::Worker;
        let note_weak = weak.clone();
        let host_weak = weak.clone();
        let group = Group::join(
            &self.endpoints.http,
            self.token.as_deref(),
            self.engine.writer().to_owned(),
            &config,
            use_worker,
            move |note| {
                if let Some(shared) = note_weak.upgrade() {
                    drive(&shared, |inner| inner.on_note(&shared, note));
                }
            },
            move || {
                if let Some(shared) = host_weak.upgrade() {
                    drive(&shared, Inner::become_host);
                }
            },
        );
        if let Some(group) = group {
            self.engine.set_guest(true, now());
            self.group = Some(group);
        }
    }

    /// Leaves this token's group for the new token's (`set_token`).
    pub(super) fn regroup(&mut self, weak: &Weak<Shared>) {
        let config = js_sys::JSON::parse(&self.sharing.1)
            .ok()
            .and_then(|config| {
                let options = js_sys::Reflect::get(&config, &"options".into()).ok()?;
                let options = if options.is_object() {
                    options
                } else {
                    js_sys::Object::new().into()
                };
                let token = self
                    .token
                    .as_deref()
                    .map_or(JsValue::UNDEFINED, JsValue::from);
                js_sys::Reflect::set(&options, &"token".into(), &token).ok()?;
                js_sys::Reflect::set(&config, &"options".into(), &options).ok()?;
                js_sys::JSON::stringify(&config).ok()?.as_string()
            })
            .unwrap_or_else(|| self.sharing.1.clone());
        self.group = None;
        self.told_refusal = false;
        self.engine.set_hosting(false);
        self.sharing.1.clone_from(&config);
        self.join_group(weak);
    }

    /// Leaves the group as the page goes away (`pagehide`): the others hear `leave` or
    /// `bye`. Nothing reconnects here: the page is closing, or frozen in the back/forward
    /// cache, from which `rejoin_group` brings it back.
    pub(super) fn leave_group(&mut self) {
        if self.group.take().is_some() {
            self.engine.set_hosting(false);
        }
    }

    /// The page came back from the back/forward cache: join the group again and connect
    /// through it (the old link went with the old group).
    pub(super) fn rejoin_group(&mut self, weak: &Weak<Shared>) {
        if self.group.is_some() || self.sharing.0 == Sharing::Off {
            return;
        }
        let was_guest = self.engine.is_guest();
        self.join_group(weak);
        if self.group.is_none() {
            // The group cannot be joined now: a connection of its own.
            self.engine.set_guest(false, now());
        } else if was_guest {
            // A host tab becomes a guest and reconnects in `join_group`; a guest's link went
            // with the old group.
            self.drop_host(CloseInfo {
                opened: true,
                close_code: Some(1001),
                reason: "the page came back from the back/forward cache".into(),
                ..CloseInfo::default()
            });
        }
    }

    /// `(role, guests, through the shared worker)`: `"host"` with its number of guests,
    /// `"guest"`, or `"off"`.
    pub(crate) fn sharing(&self) -> (&'static str, usize, bool) {
        match &self.group {
            None => ("off", 0, false),
            Some(Group {
                role: Role::Host(host),
                ..
            }) => ("host", host.guests().count(), false),
            Some(Group {
                role: Role::Guest { host },
                ..
            }) => ("guest", 0, host.as_deref() == Some(WORKER_ID)),
        }
    }

    /// Hosts the tabs of a shared worker, reached through `ports`.
    pub(crate) fn host_in_worker(&mut self, ports: Ports) {
        self.group = Some(Group::worker(ports));
        self.engine.set_hosting(true);
    }

    /// This tab won the election: it connects to the relay and serves the others.
    fn become_host(&mut self) {
        let Some(group) = &mut self.group else {
            return;
        };
        group.role = Role::Host(Host::default());
        group.post("host", "", "");
        self.engine.set_hosting(true);
        self.engine.set_guest(false, now());
    }

    /// The shared link opens: ask the host to take us.
    pub(super) fn connect_shared(&mut self) {
        self.connection = Connection::Shared;
        if let Some(group) = &mut self.group {
            if let Role::Guest { host } = &mut group.role {
                *host = None;
                group.post("hello", "", "");
            }
        }
    }

    /// A frame for the host (the engine's `Send` on the shared link).
    pub(super) fn send_shared(&self, text: &str) {
        if let Some(group) = &self.group {
            if let Role::Guest { host: Some(host) } = &group.role {
                group.post("msg", host, text);
            }
        }
    }

    /// The shared link is dropped by the engine.
    pub(super) fn disconnect_shared(&mut self) {
        if let Some(group) = &mut self.group {
            if let Role::Guest { host } = &mut group.role {
                let host = host.take();
                group.leave_host(host.as_deref());
            }
        }
    }

    /// Relays the host engine's effect to the guests; returns the effect unless it was only
    /// theirs (a guest's write settling).
    pub(super) fn host_effect(&mut self, effect: Effect) -> Option<Effect> {
        let Some(Group {
            role: Role::Host(host),
            ..
        }) = &mut self.group
        else {
            return match effect {
                Effect::Tap(_) => None,
                other => Some(other),
            };
        };
        let (out, keep) = match effect {
            Effect::Tap(tap) => (host.on_tap(&self.engine, tap), None),
            Effect::WriteSettled(outcome) => match host.on_write(&outcome) {
                Some(out) => (out, None),
                None => (Vec::new(), Some(Effect::WriteSettled(outcome))),
            },
            Effect::Presence(stream) => {
                let out = host.on_presence(&self.engine, &stream);
                (out, Some(Effect::Presence(stream)))
            }
            Effect::StreamError {
                stream,
                code,
                message,
            } => {
                let out = host.on_stream_error(&stream, &code, &message);
                let effect = Effect::StreamError {
                    stream,
                    code,
                    message,
                };
                (out, Some(effect))
            }
            other => (Vec::new(), Some(other)),
        };
        self.post_out(out);
        keep
    }

    /// After the engine's effects: answers the guests that can be answered, and tells them
    /// whether the connection is up.
    pub(super) fn host_idle(&mut self) {
        let Some(Group {
            role: Role::Host(host),
            ..
        }) = &mut self.group
        else {
            return;
        };
        let mut out = host.on_connection(&self.engine);
        out.extend(host.serve(&self.engine));
        out.extend(host.on_link(self.engine.connection_up()));
        self.post_out(out);
        // The relay refused our token: the guests are refused the same way (and set a new
        // token, which takes them to that token's connection).
        match (self.engine.refusal(), self.told_refusal) {
            (Some(refusal), false) => {
                self.told_refusal = true;
                self.tell_refusal("", &refusal);
            }
            (None, true) => self.told_refusal = false,
            _ => {}
        }
    }

    fn tell_refusal(&self, to: &str, refusal: &CloseInfo) {
        if let Some(group) = &self.group {
            let text = serde_json::json!({
                "closeCode": refusal.close_code,
                "code": refusal.code,
                "reason": refusal.reason,
            });
            group.post("close", to, &text.to_string());
        }
    }

    fn post_out(&self, out: Out) {
        if let Some(group) = &self.group {
            for (guest, text) in out {
                group.post("msg", &guest, &text);
            }
        }
    }

    /// A message of the group (`shared`: this client's, whose [`Inner`] this is).
    pub(crate) fn on_note(&mut self, shared: &Rc<Shared>, note: Note) {
        let Some(group) = &mut self.group else {
            return;
        };
        let Note {
            kind,
            from,
            text,
            message,
        } = note;
        let shared_link = matches!(self.connection, Connection::Shared);
        let mut lost = false;
        let mut refusal: Option<String> = None;
        match (&mut group.role, kind.as_str()) {
            (Role::Host(host), "hello") => {
                let out = host.join(&self.engine, &from);
                group.post("welcome", &from, "");
                self.post_out(out);
                if let Some(refusal) = self.engine.refusal() {
                    self.tell_refusal(&from, &refusal);
                }
            }
            (Role::Host(host), "msg") => {
                let out = host.on_text(&mut self.engine, &from, &text);
                self.post_out(out);
            }
            (Role::Host(host), "leave") => host.leave(&mut self.engine, &from),
            (Role::Guest { host }, "welcome") if host.is_none() && shared_link => {
                *host = Some(from);
                self.engine.on_open(now());
            }
            (Role::Guest { host: Some(host) }, "msg") if *host == from => {
                if message.is_string() {
                    receive(shared, &mut self.engine, &text, now(), Some(&message));
                } else {
                    self.engine.on_text(&text, now());
                }
            }
            // The relay refused the host's token: so are we.
            (Role::Guest { host: Some(host) }, "close") if *host == from => {
                refusal = Some(text);
            }
            // Our host left, or another took over (ours died without a word).
            (Role::Guest { host: Some(host) }, "bye") if *host == from => lost = true,
            (Role::Guest { host: Some(host) }, "host") if *host != from => lost = true,
            (Role::Guest { host: None }, "host") if shared_link => group.post("hello", "", ""),
            _ => {}
        }
        if lost {
            forget_messages(shared);
            self.lost_host();
        }
        if let Some(text) = refusal {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let info = CloseInfo {
                opened: true,
                close_code: value["closeCode"]
                    .as_u64()
                    .and_then(|code| u16::try_from(code).ok()),
                http_status: None,
                code: value["code"].as_str().map(str::to_owned),
                reason: value["reason"].as_str().unwrap_or_default().to_owned(),
            };
            self.drop_host(info);
        }
    }

    fn lost_host(&mut self) {
        self.drop_host(CloseInfo {
            opened: true,
            close_code: Some(1001),
            reason: "the tab holding the shared connection went away".into(),
            ..CloseInfo::default()
        });
    }

    /// The shared link ended as `info` says.
    fn drop_host(&mut self, info: CloseInfo) {
        if let Some(Group {
            role: Role::Guest { host },
            ..
        }) = &mut self.group
        {
            *host = None;
        }
        self.connection = Connection::None;
        self.engine.on_closed(info, now());
    }
}
