// The live panel: the connection status with its reason and history, counters, the board's
// fingerprint, and the event stream as this tab receives it (seq, op, key, and the latency
// from the commit in PostgreSQL to this tab).
import { digest } from "./digest.js";

const LABELS = {
  connecting: "Connecting",
  live: "Live",
  reconnecting: "Reconnecting",
  resyncing: "Resyncing",
  offline: "Offline",
  closed: "Closed",
};
const MAX_ROWS = 150;

function time(at = Date.now()) {
  return new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
}

function cell(text, className) {
  const element = document.createElement("td");
  element.textContent = text;
  if (className) element.className = className;
  return element;
}

export class WirePanel {
  constructor({ client, tasks }) {
    this.client = client;
    this.tasks = tasks;
    this.state = "connecting";
    this.reason = "";
    this.everLive = false;
    /** Every state this tab went through, oldest first: `{ state, reason, at }`. */
    this.history = [];
    /** seq -> latency cell waiting for its measurement. */
    this.latencyCells = new Map();
    this.snapshotCount = 0;
    this.snapshotQueued = false;
    this.refreshQueued = false;
    this.element = (id) => document.getElementById(id);
  }

  /** The status as the demo names it: the client's `connecting` after having been live is
   * "reconnecting" (the relay or PostgreSQL went away and the client is getting back). */
  static display(info, everLive) {
    if (info.status === "connecting" && (everLive || info.attempt > 0)) return "reconnecting";
    return info.status in LABELS ? info.status : "connecting";
  }

  /** How this tab is connected: its own WebSocket or SSE stream, or the one the tabs of this
   * browser share (held by the package's shared worker or by another tab). */
  static transport(transport, sharing) {
    if (transport === "shared") return sharing?.worker ? "over the tabs' shared connection (worker)" : "over another tab's connection";
    if (!transport) return "";
    const own = transport === "sse" ? "SSE" : "WebSocket";
    return sharing?.role === "host" ? `over ${own}, shared with ${sharing.guests} other tab(s)` : `over ${own}`;
  }

  status(info) {
    const state = WirePanel.display(info, this.everLive);
    if (state === "live") this.everLive = true;
    const reason = state === "live" || info.reason === info.status ? "" : info.reason ?? "";
    const retry = info.retryInMs ? ` · retry in ${(info.retryInMs / 1000).toFixed(1)} s` : "";
    const pill = this.element("status-pill");
    pill.dataset.state = state;
    this.element("status-label").textContent = LABELS[state];
    this.element("state-word").textContent = state;
    this.element("state-word").dataset.state = state;
    this.element("status-reason").textContent = reason ? `${reason}${info.code ? ` (${info.code})` : ""}${retry}` : "";
    pill.title = reason || "Connected: changes arrive as they commit";
    this.element("transport").textContent = WirePanel.transport(info.transport, this.client.sharing);
    if (state !== this.state || this.history.length === 0) {
      this.history.push({ state, reason, at: Date.now() });
      if (this.history.length > 200) this.history.shift();
      this.system(reason ? `${state}: ${reason}` : state, `state-${state}`);
      this.state = state;
      this.reason = reason;
      this.renderTimeline();
    } else if (reason !== this.reason && reason) {
      // Same state, newer reason (subscribing, retry delays): update the latest entry.
      this.history.at(-1).reason = reason;
      this.reason = reason;
      this.renderTimeline();
    }
    this.refresh();
  }

  renderTimeline() {
    const items = this.history.slice(-6).reverse().map((entry) => {
      const item = document.createElement("li");
      item.dataset.state = entry.state;
      const when = document.createElement("time");
      when.textContent = time(entry.at);
      const what = document.createElement("span");
      what.textContent = entry.reason ? `${entry.state} — ${entry.reason}` : entry.state;
      item.append(when, what);
      return item;
    });
    this.element("timeline").replaceChildren(...items);
  }

  changed(change) {
    if (change.origin === "local" || change.origin === "rollback") {
      // This tab's own write, shown before it committed (or taken back): its row comes with
      // its confirmation (`written`).
      this.refresh();
      return;
    }
    if (change.origin !== "event") {
      // A snapshot (first load or resync) arrives as one change per record: one line.
      this.snapshotCount += 1;
      if (!this.snapshotQueued) {
        this.snapshotQueued = true;
        setTimeout(() => {
          this.snapshotQueued = false;
          this.system(`${change.origin}: ${this.snapshotCount} record${this.snapshotCount === 1 ? "" : "s"} at seq ${this.tasks.seq}`);
          this.snapshotCount = 0;
        }, 0);
      }
      this.refresh();
      return;
    }
    this.latencyCells.set(change.seq, this.eventRow(change.seq, change.op, change.key, "…"));
    this.refresh();
  }

  /** Adds the stream's row for one event; returns its latency cell. */
  eventRow(seq, opName, key, latencyText) {
    const row = document.createElement("tr");
    row.className = `op-${opName} fresh`;
    row.dataset.seq = String(seq);
    const op = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = `op ${opName}`;
    badge.textContent = opName;
    op.append(badge);
    const latency = cell(latencyText, "num latency");
    row.append(cell(String(seq), "seq"), op, cell(key, "key"), latency);
    this.prepend(row);
    setTimeout(() => row.classList.remove("fresh"), 900);
    return latency;
  }

  /** A line that is not an event: status changes, snapshots, resyncs, races. */
  system(text, className = "") {
    const row = document.createElement("tr");
    row.className = `system ${className}`;
    const content = cell(`${time()}  ${text}`);
    content.colSpan = 4;
    row.append(content);
    this.prepend(row);
  }

  prepend(row) {
    const body = this.element("events");
    body.prepend(row);
    while (body.children.length > MAX_ROWS) {
      const last = body.lastElementChild;
      if (last.dataset.seq) this.latencyCells.delete(Number(last.dataset.seq));
      last.remove();
    }
  }

  latency(seq, ms, median) {
    const target = this.latencyCells.get(seq);
    if (target) {
      target.textContent = ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
      target.classList.toggle("slow", ms > 250);
      this.latencyCells.delete(seq);
    }
    if (median !== null) this.element("stat-latency").textContent = `${median < 10 ? median.toFixed(1) : Math.round(median)} ms`;
  }

  /** This tab's write was confirmed (its row, at the committed seq) or refused. */
  written(write) {
    if (write.status === "refused") {
      this.system(`refused: ${write.key} (${write.code})`, "state-offline");
      this.refresh();
      return;
    }
    this.eventRow(write.seq, write.op, write.key, "yours");
    this.refresh();
  }

  /** The board's fingerprint: `seq · digest`. */
  fingerprint() {
    return `${this.tasks.seq}·${digest(this.tasks.entries())}`;
  }

  refresh() {
    if (this.refreshQueued) return;
    this.refreshQueued = true;
    setTimeout(() => {
      this.refreshQueued = false;
      this.element("stat-seq").textContent = String(this.tasks.seq);
      this.element("stat-size").textContent = String(this.tasks.size);
      this.element("stat-dups").textContent = String(this.client.stats.duplicates);
      this.element("fingerprint").textContent = `seq ${this.tasks.seq} · ${digest(this.tasks.entries())}`;
    }, 0);
  }
}
