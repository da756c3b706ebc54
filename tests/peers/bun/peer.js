// The Bun peer of the fan-out and memory benchmarks (scripts/bench.d/20-fanout, 30-memory):
// a minimal Bun program doing what a team would write with uWebSockets pub/sub to forward
// PostgreSQL notifications to browsers, so every table has a `relay / Bun` column.
//
// It speaks just enough of Tidewire's protocol (docs/PROTOCOL.md) for the load generator to
// read it like the relay: `GET /v1/ws`, `{"type":"subscribe","stream":"raw:<channel>"}`
// answered with `subscribed`; each `pg_notify('<channel>', payload)` becomes one event frame
// `{"type":"event","stream":"raw:<channel>","epoch":E,"seq":S,"key":"<channel>","op":"message",
// "data":<payload>}` published once to the topic (uWebSockets writes it to every subscriber).
// The payload is spliced in as text: the load generator's publisher sends JSON.
//
//   DATABASE_URL=postgres://... PORT=7500 bun peer.js
import postgres from "postgres";

const port = Number(process.env.PORT ?? 7500);
const sql = postgres(process.env.DATABASE_URL, { max: 1, onnotice: () => {} });
// The life of this process, as the relay's boot id is for its raw channels.
const epoch = Date.now();
const channels = new Map();

function listen(channel) {
  let state = channels.get(channel);
  if (!state) {
    const topic = `raw:${channel}`;
    const head = `{"type":"event","stream":${JSON.stringify(topic)},"epoch":${epoch},"seq":`;
    const tail = `,"key":${JSON.stringify(channel)},"op":"message","data":`;
    state = { seq: 0, ready: null };
    state.ready = sql.listen(channel, (payload) => {
      state.seq += 1;
      server.publish(topic, `${head}${state.seq}${tail}${payload}}`);
    });
    channels.set(channel, state);
  }
  return state;
}

function refuse(ws, stream, message) {
  ws.send(JSON.stringify({ type: "error", stream, code: "bad_request", message }));
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(request, server) {
    if (new URL(request.url).pathname === "/v1/ws" && server.upgrade(request)) return undefined;
    return new Response("not found", { status: 404 });
  },
  websocket: {
    perMessageDeflate: false,
    async message(ws, text) {
      let message;
      try {
        message = JSON.parse(text);
      } catch {
        refuse(ws, null, "not JSON");
        return;
      }
      const stream = message.stream;
      if (message.type !== "subscribe" || typeof stream !== "string" || !stream.startsWith("raw:")) {
        refuse(ws, stream ?? null, "only subscribe to raw:<channel>");
        return;
      }
      const state = listen(stream.slice(4));
      await state.ready;
      ws.subscribe(stream);
      ws.send(`{"type":"subscribed","stream":${JSON.stringify(stream)},"epoch":${epoch},"seq":${state.seq},"resumed":false}`);
    },
  },
});
console.log(`bun peer listening on 127.0.0.1:${server.port}`);
