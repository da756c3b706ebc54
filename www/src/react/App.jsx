// The board as React components: `useCollection` gives the tasks as rows that keep their
// identity until they change (so `memo` rows re-render only when their task changes),
// `useStatus` and `usePresence` the connection and who is here; writes are the collection's
// `set`/`patch`/`delete`, shown at once and confirmed by PostgreSQL.
import { memo, useEffect, useMemo, useState } from "react";
import { useCollection, useLiveCollection, usePresence, useStatus } from "tidewire/react";

import { loadIdentity } from "../identity.js";
import { positionAtEnd, sortEntries } from "../order.js";

const STREAM = "demo:tasks";
const LABELS = { connecting: "Connecting", live: "Live", resyncing: "Resyncing", offline: "Offline", closed: "Closed" };

function newKey() {
  const random = crypto.getRandomValues(new Uint32Array(2));
  return `t-${random[0].toString(36)}${random[1].toString(36)}`.slice(0, 14);
}

function Status() {
  const { status } = useStatus();
  return (
    <div className="pill" id="status-pill" data-state={status} role="status" aria-live="polite">
      <span className="pill-dot"></span>
      <span id="status-label">{LABELS[status] ?? status}</span>
    </div>
  );
}

function Presence({ identity }) {
  const tasks = useLiveCollection(STREAM);
  useEffect(() => tasks.setPresence({ name: identity.name, color: identity.color }), [tasks, identity]);
  const members = usePresence(STREAM);
  return (
    <div className="presence" id="presence" aria-label="Who is on the board">
      {members.map((member) => (
        <span key={member.client} className="avatar" title={member.data?.name} style={{ background: member.data?.color }}>
          {(member.data?.name ?? "?").slice(0, 1)}
        </span>
      ))}
      <span className="presence-label">{members.length} here</span>
    </div>
  );
}

const Task = memo(function Task({ row, identity }) {
  const tasks = useLiveCollection(STREAM);
  const { key, value } = row;
  return (
    <li className={`task${value.done ? " done" : ""}`} data-key={key}>
      <span></span>
      <input
        className="task-toggle"
        type="checkbox"
        checked={!!value.done}
        aria-label={`Done: ${value.title}`}
        onChange={(event) => tasks.patch(key, { done: event.target.checked, edited_by: identity.name })}
      />
      <div className="task-body">
        <div className="task-title">{value.title}</div>
        <div className="task-meta">{value.author ? `added by ${value.author}` : "added from SQL"}</div>
      </div>
      <div className="task-actions">
        <button className="icon-btn delete" type="button" aria-label={`Delete ${value.title}`} onClick={() => tasks.delete(key)}>
          ×
        </button>
      </div>
    </li>
  );
});

export function App() {
  const identity = useMemo(loadIdentity, []);
  const tasks = useLiveCollection(STREAM);
  const rows = useCollection(STREAM);
  const sorted = useMemo(
    () => sortEntries(rows.map((row) => [row.key, row.value, row])).map(([, , row]) => row),
    [rows],
  );
  const [title, setTitle] = useState("");
  const done = sorted.filter((row) => row.value.done).length;

  const add = (event) => {
    event.preventDefault();
    const text = title.trim();
    if (!text) return;
    setTitle("");
    const entries = sorted.map((row) => [row.key, row.value]);
    tasks.set(newKey(), { title: text, done: false, pos: positionAtEnd(entries), author: identity.name, created_at: new Date().toISOString() });
  };

  return (
    <>
      <header className="topbar">
        <a className="brand" href="/" aria-label="Tidewire demo home">
          <img src="/favicon.svg" alt="" width="28" height="28" />
          <span className="brand-name">Tidewire</span>
          <span className="brand-tag">Team board · React</span>
        </a>
        <div className="topbar-right">
          <Presence identity={identity} />
          <Status />
        </div>
      </header>
      <main className="layout">
        <section className="board card" aria-labelledby="board-title">
          <div className="board-head">
            <div>
              <h1 id="board-title">Launch checklist</h1>
              <p className="sub">
                The same board as <a href="/">the main demo</a>, written with <code>tidewire/react</code> in about a
                hundred lines (www/src/react/App.jsx).
              </p>
            </div>
            <div className="counts" id="counts" aria-live="polite">
              {done} of {sorted.length} done
            </div>
          </div>
          <form className="add" id="add-form" autoComplete="off" onSubmit={add}>
            <input
              id="new-title"
              type="text"
              maxLength={200}
              placeholder="Add a task and press Enter"
              aria-label="New task"
              value={title}
              onChange={(event) => setTitle(event.target.value)}
            />
          </form>
          <ul className="tasks" id="task-list" aria-label="Tasks">
            {sorted.map((row) => (
              <Task key={row.key} row={row} identity={identity} />
            ))}
          </ul>
        </section>
      </main>
    </>
  );
}
