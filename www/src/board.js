// The task list: renders the live collection (keyed DOM updates, so a remote change never
// disturbs what you are typing) and turns clicks into writes. There is no optimistic local
// state: a write commits in PostgreSQL and comes back as a change within milliseconds, the
// same way it reaches every other tab, so all tabs render from the same sequence of events.
import { attempt } from "./toast.js";
import { planMove, positionAtEnd, positionOf, sortEntries } from "./order.js";

const RACE_SUFFIX = / \([^()]* #\d+\)$/;

function newKey() {
  const random = crypto.getRandomValues(new Uint32Array(2));
  return `t-${random[0].toString(36)}${random[1].toString(36)}`.slice(0, 14);
}

/** Whether a typing preview is still current: its author is still editing the task (by
 * presence), or it is younger than its own lifetime. */
function draftShown(draft, editors, now) {
  return draft.until > now || (editors ?? []).some((editor) => editor.tab !== undefined && editor.tab === draft.from);
}

function isTask(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function button(action, label, text) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = `icon-btn ${action}`;
  element.dataset.action = action;
  element.setAttribute("aria-label", label);
  element.title = label;
  element.textContent = text;
  return element;
}

export class Board {
  constructor({ tasks, mine, identity, presence, wire, notify }) {
    this.tasks = tasks;
    this.follow(mine);
    this.identity = identity;
    this.presence = presence;
    this.wire = wire;
    this.notify = notify;
    this.list = document.getElementById("task-list");
    this.empty = document.getElementById("empty");
    this.loading = document.getElementById("loading");
    this.counts = document.getElementById("counts");
    /** key -> <li>, for keyed updates. */
    this.items = new Map();
    /** key -> seq that last changed it (shown as the record's version). */
    this.versions = new Map();
    /** key -> { name, text, from, until }: what someone is typing in that task right now. It
     * stays while its author's presence says they are editing that task, else until `until`
     * (a preview from a tab whose presence has not arrived, or that left without a word). */
    this.drafts = new Map();
    this.filter = "all";
    this.editing = null;
    this.renderQueued = false;
    this.isLoaded = false;
    /** Tells our own typing previews (echoed back to us) from other people's, and ties
     * a preview to its author's presence. */
    this.tabId = presence.tab;
    this.bindForm();
    this.bindList();
  }

  bindForm() {
    const form = document.getElementById("add-form");
    const input = document.getElementById("new-title");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const title = input.value.trim();
      if (!title) return;
      input.value = "";
      const value = {
        title,
        done: false,
        pos: positionAtEnd(this.sorted()),
        author: this.identity.name,
        created_at: new Date().toISOString(),
      };
      attempt(this.tasks.set(newKey(), value), "add the task");
    });
    for (const tab of document.querySelectorAll("[data-filter]")) {
      tab.addEventListener("click", () => {
        this.filter = tab.dataset.filter;
        for (const other of document.querySelectorAll("[data-filter]")) other.setAttribute("aria-selected", String(other === tab));
        this.scheduleRender();
      });
    }
    document.getElementById("clear-done").addEventListener("click", () => {
      for (const [key, value] of this.sorted()) if (value.done) attempt(this.tasks.delete(key), "delete the task");
    });
    document.getElementById("race").addEventListener("click", () => this.race());
  }

  bindList() {
    this.list.addEventListener("click", (event) => {
      const item = event.target.closest("li.task");
      if (!item) return;
      const key = item.dataset.key;
      const action = event.target.closest("[data-action]")?.dataset.action;
      if (action === "delete") this.remove(key);
      else if (action === "up") this.move(key, -1);
      else if (action === "down") this.move(key, +1);
      else if (action === "edit" || event.target.closest(".task-title")) this.startEdit(key);
    });
    this.list.addEventListener("change", (event) => {
      if (!event.target.matches(".task-toggle")) return;
      const key = event.target.closest("li.task").dataset.key;
      attempt(this.tasks.patch(key, { done: event.target.checked, edited_by: this.identity.name }), "update the task");
    });
    this.list.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && event.target.matches(".task-title")) this.startEdit(event.target.closest("li.task").dataset.key);
    });
    this.bindDrag();
  }

  /** Drag and drop by the grip (pointer devices); the arrow buttons do the same everywhere. */
  bindDrag() {
    let dragged = null;
    this.list.addEventListener("pointerdown", (event) => {
      const grip = event.target.closest(".grip");
      if (grip) grip.closest("li.task").draggable = true;
    });
    this.list.addEventListener("dragstart", (event) => {
      dragged = event.target.closest("li.task");
      if (!dragged) return;
      event.dataTransfer.effectAllowed = "move";
      event.dataTransfer.setData("text/plain", dragged.dataset.key);
      dragged.classList.add("dragging");
    });
    const clearMarks = () => {
      for (const item of this.list.querySelectorAll(".drop-before, .drop-after")) item.classList.remove("drop-before", "drop-after");
    };
    this.list.addEventListener("dragover", (event) => {
      if (!dragged) return;
      event.preventDefault();
      const over = event.target.closest("li.task");
      clearMarks();
      if (!over || over === dragged) return;
      const box = over.getBoundingClientRect();
      over.classList.add(event.clientY < box.top + box.height / 2 ? "drop-before" : "drop-after");
    });
    this.list.addEventListener("drop", (event) => {
      if (!dragged) return;
      event.preventDefault();
      const over = this.list.querySelector(".drop-before, .drop-after");
      if (over) {
        const sorted = this.sorted();
        const others = sorted.filter(([key]) => key !== dragged.dataset.key);
        let index = others.findIndex(([key]) => key === over.dataset.key);
        if (over.classList.contains("drop-after")) index += 1;
        this.applyMove(sorted, dragged.dataset.key, index);
      }
      clearMarks();
    });
    this.list.addEventListener("dragend", () => {
      dragged?.classList.remove("dragging");
      if (dragged) dragged.draggable = false;
      dragged = null;
      clearMarks();
    });
  }

  /** The tasks sorted by position: `[[key, value], ...]`. */
  sorted() {
    return sortEntries([...this.tasks.entries()].filter(([, value]) => isTask(value)));
  }

  move(key, delta) {
    const sorted = this.sorted();
    const index = sorted.findIndex(([other]) => other === key);
    if (index < 0) return;
    const target = index + delta;
    if (target < 0 || target >= sorted.length) return;
    this.applyMove(sorted, key, target);
  }

  applyMove(sorted, key, index) {
    const plan = planMove(sorted, key, index);
    if (plan.pos !== undefined) {
      attempt(this.tasks.patch(key, { pos: plan.pos }), "move the task");
      return;
    }
    // Neighbours too close to split: renumber everyone (rare; one patch per task).
    for (const [other, pos] of plan.renumber) attempt(this.tasks.patch(other, { pos }), "move the task");
  }

  remove(key) {
    const value = this.tasks.get(key);
    attempt(this.tasks.delete(key), "delete the task").then((seq) => {
      if (seq === null || !isTask(value)) return;
      this.notify(`Deleted “${value.title}”`, "info", {
        label: "Undo",
        run: () => attempt(this.tasks.set(key, value), "restore the task"),
      });
    });
  }

  /** Sends a burst of conflicting edits to the first task (see the "Race" button). */
  race() {
    const first = this.sorted()[0];
    if (!first) return;
    const [key, value] = first;
    const base = String(value.title ?? "").replace(RACE_SUFFIX, "");
    const runs = [];
    for (let round = 1; round <= 12; round += 1) {
      runs.push(attempt(this.tasks.patch(key, { title: `${base} (${this.identity.name} #${round})` }), "race"));
    }
    Promise.all(runs).then((seqs) => {
      const committed = seqs.filter((seq) => seq !== null);
      if (committed.length === 0) return;
      this.wire.system(`race: ${committed.length} edits of ${key} committed as seq ${Math.min(...committed)}–${Math.max(...committed)}`);
    });
  }

  startEdit(key) {
    if (this.editing === key) return;
    const item = this.items.get(key);
    const value = this.tasks.get(key);
    if (!item || !isTask(value)) return;
    if (this.editing) this.items.get(this.editing)?.querySelector(".task-input")?.blur();
    this.editing = key;
    this.presence.setEditing(key);
    const title = item.querySelector(".task-title");
    const input = document.createElement("input");
    input.className = "task-input";
    input.value = String(value.title ?? "");
    input.maxLength = 200;
    input.setAttribute("aria-label", "Task title");
    title.hidden = true;
    title.after(input);
    item.classList.add("editing-self");
    input.focus();
    input.select();
    let lastDraft = 0;
    let finished = false;
    const finish = (save) => {
      if (finished || this.editing !== key) return;
      finished = true;
      const text = input.value.trim();
      const current = this.tasks.get(key);
      if (save && text && isTask(current) && text !== current.title) {
        attempt(this.tasks.patch(key, { title: text, edited_by: this.identity.name }), "rename the task");
      }
      this.tasks.send(key, { draft: null, from: this.tabId }).catch(() => {});
      this.editing = null;
      this.presence.setEditing(null);
      input.remove();
      title.hidden = false;
      item.classList.remove("editing-self");
      this.scheduleRender();
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") finish(true);
      if (event.key === "Escape") finish(false);
    });
    input.addEventListener("blur", () => {
      if (!this.reordering) finish(true);
    });
    let draftTimer = null;
    const sendDraft = () => {
      draftTimer = null;
      if (finished) return;
      lastDraft = Date.now();
      const { name, color } = this.identity;
      this.tasks.send(key, { draft: input.value.slice(0, 200), from: this.tabId, name, color }).catch(() => {});
    };
    input.addEventListener("input", () => {
      // Ephemeral "typing" preview for the others: at most 8 per second, always ending on
      // the latest text.
      if (draftTimer !== null) return;
      draftTimer = setTimeout(sendDraft, Math.max(0, lastDraft + 125 - Date.now()));
    });
  }

  /** An ephemeral message: someone's typing preview. */
  message({ key, data }) {
    if (!data || typeof data !== "object" || !("draft" in data) || data.from === this.tabId) return;
    if (typeof data.draft !== "string") this.drafts.delete(key);
    else this.drafts.set(key, { text: data.draft, name: String(data.name ?? "Someone"), from: data.from, until: Date.now() + 4000 });
    this.scheduleRender();
  }

  changed(change) {
    if (change.seq) this.versions.set(change.key, change.seq);
    if (change.op === "delete") this.versions.delete(change.key);
    if (change.origin === "event") {
      this.drafts.delete(change.key);
      this.flash = this.flash ?? new Set();
      this.flash.add(change.key);
    }
    this.scheduleRender();
  }

  loaded() {
    this.isLoaded = true;
    this.scheduleRender();
  }

  /** Shows `mine` (a filtered collection: the tasks of one author) under the "Mine" tab. */
  follow(mine) {
    this.unfollowMine?.();
    this.mine = mine;
    this.unfollowMine = mine.subscribe(() => this.scheduleRender());
    this.scheduleRender();
  }

  /** The titles under "Mine", in board order (for the tests). */
  mineTitles() {
    return sortEntries([...this.mine.entries()].filter(([, value]) => isTask(value))).map(([, value]) => value.title);
  }

  scheduleRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    // A macrotask, not requestAnimationFrame: background tabs must keep up too.
    setTimeout(() => {
      this.renderQueued = false;
      this.render();
    }, 0);
  }

  render() {
    const sorted = this.sorted();
    const editors = this.presence.editorsByTask();
    const done = sorted.filter(([, value]) => value.done === true).length;
    this.counts.textContent = `${sorted.length - done} open · ${done} done · ${this.mine.size} mine`;
    // "Mine" renders the relay-filtered view; the other tabs filter the whole board locally.
    const visible =
      this.filter === "mine"
        ? sortEntries([...this.mine.entries()].filter(([, value]) => isTask(value)))
        : sorted.filter(([, value]) => this.filter === "all" || (this.filter === "done") === (value.done === true));
    const present = new Set(visible.map(([key]) => key));
    for (const [key, item] of this.items) {
      if (!present.has(key) && key !== this.editing) {
        item.remove();
        this.items.delete(key);
      }
    }
    const now = Date.now();
    for (const [key, draft] of this.drafts) if (!draftShown(draft, editors.get(key), now)) this.drafts.delete(key);
    visible.forEach(([key, value], index) => {
      let item = this.items.get(key);
      if (!item) {
        item = this.create(key);
        this.items.set(key, item);
      }
      this.update(item, key, value, editors.get(key) ?? [], now);
      const current = this.list.children[index];
      if (current !== item) {
        const focused = item.contains(document.activeElement) ? document.activeElement : null;
        this.reordering = true;
        this.list.insertBefore(item, current ?? null);
        this.reordering = false;
        if (focused && document.activeElement !== focused) focused.focus({ preventScroll: true });
      }
    });
    this.flash?.clear();
    this.loading.hidden = this.isLoaded || sorted.length > 0;
    this.empty.hidden = !this.loading.hidden || visible.length > 0;
    if (this.drafts.size > 0) setTimeout(() => this.scheduleRender(), 1000);
    this.wire.refresh();
  }

  create(key) {
    const item = document.createElement("li");
    item.className = "task entering";
    item.dataset.key = key;
    const grip = document.createElement("span");
    grip.className = "grip";
    grip.title = "Drag to reorder";
    grip.setAttribute("aria-hidden", "true");
    const toggle = document.createElement("input");
    toggle.type = "checkbox";
    toggle.className = "task-toggle";
    toggle.setAttribute("aria-label", "Done");
    const body = document.createElement("div");
    body.className = "task-body";
    const title = document.createElement("div");
    title.className = "task-title";
    title.tabIndex = 0;
    const meta = document.createElement("div");
    meta.className = "task-meta";
    const draft = document.createElement("div");
    draft.className = "task-draft";
    body.append(title, meta, draft);
    const actions = document.createElement("div");
    actions.className = "task-actions";
    actions.append(button("up", "Move up", "↑"), button("down", "Move down", "↓"), button("edit", "Edit", "✎"), button("delete", "Delete", "✕"));
    item.append(grip, toggle, body, actions);
    setTimeout(() => item.classList.remove("entering"), 400);
    return item;
  }

  update(item, key, value, editors, now) {
    const done = value.done === true;
    item.classList.toggle("done", done);
    const toggle = item.querySelector(".task-toggle");
    if (toggle.checked !== done) toggle.checked = done;
    const title = item.querySelector(".task-title");
    const text = String(value.title ?? key);
    if (title.textContent !== text) title.textContent = text;
    if (this.flash?.has(key) && !item.classList.contains("entering")) {
      item.classList.remove("flash");
      void item.offsetWidth;
      item.classList.add("flash");
    }

    const meta = item.querySelector(".task-meta");
    const parts = [];
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = value.author ? `by ${value.author}` : "";
    if (value.author === "psql") author.classList.add("from-sql");
    parts.push(author);
    const version = document.createElement("span");
    version.className = "version";
    version.title = "The seq of the event that last changed this task";
    version.textContent = `v${this.versions.get(key) ?? "?"}`;
    parts.push(version);
    for (const editor of editors) {
      const chip = document.createElement("span");
      chip.className = "editor-chip";
      chip.style.setProperty("--color", editor.color);
      chip.textContent = `${editor.name} is editing`;
      parts.push(chip);
    }
    const signature = parts.map((part) => part.textContent).join("|");
    if (meta.dataset.signature !== signature) {
      meta.dataset.signature = signature;
      meta.replaceChildren(...parts);
    }
    item.classList.toggle("editing-other", editors.length > 0);
    item.style.setProperty("--editor", editors[0]?.color ?? "transparent");

    const draft = this.drafts.get(key);
    const draftLine = item.querySelector(".task-draft");
    const showDraft = Boolean(draft && draftShown(draft, editors, now) && key !== this.editing);
    const draftText = showDraft ? `${draft.name} is typing: “${draft.text}”` : "";
    if (draftLine.textContent !== draftText) draftLine.textContent = draftText;
    draftLine.hidden = !showDraft;
    item.dataset.pos = String(positionOf(value));
  }
}
