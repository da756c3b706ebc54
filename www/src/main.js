// The demo's entry point: one Tidewire client, one live collection (the board), and the
// views that render it. Every write goes through `tasks.set/patch/delete`, which commit in
// PostgreSQL (tidewire.publish) and come back to every tab, this one included, as changes.
import { TidewireClient } from "tidewire";

import { Board } from "./board.js";
import { LatencyMeter } from "./latency.js";
import { Presence } from "./presence.js";
import { SqlCard } from "./sql-card.js";
import { toast } from "./toast.js";
import { WirePanel } from "./wire-panel.js";
import { loadIdentity } from "./identity.js";
import "./style.css";

const STREAM = "demo:tasks";

const identity = loadIdentity();
const client = new TidewireClient(location.origin, { transport: "auto" });
const tasks = client.collection(STREAM);
// "Mine": the tasks this tab's person added, as a view the relay keeps (a filtered
// collection of the same stream): tasks move in and out as their author changes.
const mineOf = (name) => client.collection(STREAM, { where: { author: name } });

const wire = new WirePanel({ client, tasks });
const latency = new LatencyMeter(location.origin, STREAM, (seq, ms) => wire.latency(seq, ms, latency.median()));
const presence = new Presence({ tasks, client, identity, onChange: () => board.scheduleRender() });
const board = new Board({ tasks, mine: mineOf(identity.name), identity, presence, wire, notify: toast });
presence.onRename = (name) => board.follow(mineOf(name));
new SqlCard();

tasks.subscribe((change) => {
  board.changed(change);
  wire.changed(change);
  if (change.origin === "event") latency.arrived(change.seq, change.ts);
});
tasks.on("resync", ({ reason }) => wire.system(`resync: ${reason}`));
tasks.on("message", (message) => board.message(message));
tasks.on("error", (error) => toast(`Board: ${error.message}`, "error"));
client.on("error", (error) => toast(`Relay: ${error.message}`, "error"));
// This tab's writes: shown at once, confirmed at their seq (a write whose committed value is
// what was shown reports no change, so its confirmation is what moves the panel's seq).
client.on("write", (write) => {
  wire.written(write);
  if (write.status === "refused") toast(`Not saved: ${write.message}`, "error");
});
client.on("status", (info) => {
  wire.status(info);
  presence.status(info);
});
wire.status(client.statusInfo);

tasks.ready().then(
  () => board.loaded(),
  () => {},
);

// Read-only handle for the browser tests and for curious developers in the console.
window.tidewireDemo = {
  client,
  tasks,
  identity,
  /** The board as this tab sees it: `{ seq, digest, status, titles, records }`. */
  state: () => ({
    seq: tasks.seq,
    digest: wire.fingerprint(),
    status: wire.state,
    statusHistory: wire.history.map((entry) => entry.state),
    titles: board.sorted().map(([, value]) => value.title),
    records: tasks.toJSON(),
    mine: board.mineTitles(),
    presence: presence.members.map((member) => member.data?.name),
  }),
};
