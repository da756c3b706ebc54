// Commit-to-tab latency of each event: the time this tab applied it minus `ts`, the commit
// time PostgreSQL stamped on the event (microseconds since the Unix epoch).
//
// The package's change callbacks do not carry `ts` yet, so the commit times are read from
// the relay's history endpoint (`GET /v1/streams/{stream}/events?since=`) in one batched
// request per burst, after the arrival time was taken. If a later version of the package
// adds `change.ts`, it is used directly.

export class LatencyMeter {
  /**
   * @param {string} baseUrl the relay's origin
   * @param {string} stream the stream's name
   * @param {(seq: number, ms: number) => void} onLatency called once per measured event
   */
  constructor(baseUrl, stream, onLatency) {
    this.url = `${baseUrl}/v1/streams/${encodeURIComponent(stream)}/events`;
    this.onLatency = onLatency;
    /** seq -> arrival time (ms since the Unix epoch) of events waiting for their `ts`. */
    this.pending = new Map();
    this.timer = null;
    this.samples = [];
  }

  /** Records the arrival of event `seq` now; `ts` when the change carried it. */
  arrived(seq, ts) {
    const now = performance.timeOrigin + performance.now();
    if (typeof ts === "number") {
      this.measured(seq, now - ts / 1000);
      return;
    }
    this.pending.set(seq, now);
    this.timer ??= setTimeout(() => this.flush(), 60);
  }

  measured(seq, ms) {
    const latency = Math.max(0, ms);
    this.samples.push(latency);
    if (this.samples.length > 200) this.samples.shift();
    this.onLatency(seq, latency);
  }

  /** The median of the last 200 measurements, or `null`. */
  median() {
    if (this.samples.length === 0) return null;
    const sorted = [...this.samples].sort((a, b) => a - b);
    return sorted[Math.floor(sorted.length / 2)];
  }

  async flush() {
    this.timer = null;
    const seqs = [...this.pending.keys()].sort((a, b) => a - b);
    if (seqs.length === 0) return;
    const first = seqs[0];
    const last = seqs.at(-1);
    // A long burst is capped: its older events simply go unmeasured.
    const from = Math.max(first, last - 499);
    try {
      const response = await fetch(`${this.url}?since=${from - 1}&limit=${last - from + 1}`);
      if (!response.ok) throw new Error(`${response.status}`);
      const body = await response.json();
      for (const event of body.events ?? []) {
        const arrival = this.pending.get(event.seq);
        if (arrival !== undefined && typeof event.ts === "number") this.measured(event.seq, arrival - event.ts / 1000);
      }
    } catch {
      // History trimmed, relay unreachable: those events stay unmeasured ("–").
    }
    for (const seq of seqs) if (seq <= last) this.pending.delete(seq);
    if (this.pending.size > 0) this.timer ??= setTimeout(() => this.flush(), 60);
  }
}
