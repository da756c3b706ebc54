// Who is on the board: each tab publishes `{ name, color, editing, tab }` as its presence
// state on the stream (ephemeral, never stored; the relay drops it when the tab goes away) and
// renders everyone's avatars in the top bar and "editing" markers on the tasks. `tab` is the
// id the tab also signs its typing previews with, so a preview can stay on screen exactly as
// long as its author is still editing that task.
import { initials, saveIdentity } from "./identity.js";

export class Presence {
  constructor({ tasks, client, identity, onChange }) {
    this.tasks = tasks;
    this.client = client;
    this.identity = identity;
    this.onChange = onChange;
    this.editing = null;
    /** This tab's id (a tab of the same person in another window is someone else). */
    this.tab = crypto.getRandomValues(new Uint32Array(2)).join("-");
    this.members = [];
    this.element = document.getElementById("presence");
    this.meName = document.getElementById("me-name");
    this.meDot = document.getElementById("me-dot");
    tasks.on("presence", (members) => this.update(members));
    document.getElementById("me").addEventListener("click", () => this.rename());
    this.renderMe();
    this.publish();
  }

  /** Sends our state (kept by the client across reconnections). */
  publish() {
    const { name, color } = this.identity;
    this.tasks.setPresence({ name, color, editing: this.editing, tab: this.tab });
  }

  /** Marks the task we are editing (`null`: none). */
  setEditing(key) {
    if (this.editing === key) return;
    this.editing = key;
    this.publish();
  }

  status() {
    // Presence is re-announced by the client itself after a reconnection; nothing to do.
  }

  update(members) {
    this.members = members.filter((member) => member.data && typeof member.data === "object");
    this.render();
    this.onChange();
  }

  /** `key -> [{ name, color, tab }]` of the other people editing each task. */
  editorsByTask() {
    const editors = new Map();
    for (const member of this.members) {
      if (member.self || typeof member.data.editing !== "string") continue;
      const list = editors.get(member.data.editing) ?? [];
      list.push({ name: String(member.data.name ?? "Someone"), color: String(member.data.color ?? "#888"), tab: member.data.tab });
      editors.set(member.data.editing, list);
    }
    return editors;
  }

  render() {
    const others = this.members.filter((member) => !member.self);
    const shown = others.slice(0, 5);
    const nodes = shown.map((member) => {
      const avatar = document.createElement("span");
      avatar.className = "avatar";
      avatar.dataset.name = String(member.data.name ?? "");
      avatar.style.setProperty("--color", String(member.data.color ?? "#888"));
      avatar.textContent = initials(member.data.name ?? "?");
      const editing = typeof member.data.editing === "string" ? " · editing" : "";
      avatar.title = `${member.data.name ?? "Someone"}${editing}`;
      if (editing) avatar.classList.add("is-editing");
      return avatar;
    });
    if (others.length > shown.length) {
      const more = document.createElement("span");
      more.className = "avatar more";
      more.textContent = `+${others.length - shown.length}`;
      nodes.push(more);
    }
    const label = document.createElement("span");
    label.className = "presence-label";
    label.textContent = others.length === 0 ? "Only you" : `${others.length} other${others.length === 1 ? "" : "s"} here`;
    this.element.replaceChildren(...nodes, label);
  }

  renderMe() {
    this.meName.textContent = this.identity.name;
    this.meDot.style.background = this.identity.color;
  }

  /** Inline rename of this tab's person. */
  rename() {
    const button = document.getElementById("me");
    const input = document.createElement("input");
    input.className = "me-input";
    input.value = this.identity.name;
    input.maxLength = 32;
    input.setAttribute("aria-label", "Your name");
    button.hidden = true;
    button.after(input);
    input.focus();
    input.select();
    let done = false;
    const finish = (save) => {
      if (done) return;
      done = true;
      const name = input.value.trim();
      if (save && name) {
        this.identity.name = name;
        saveIdentity(this.identity);
        this.renderMe();
        this.publish();
        this.onRename?.(name);
      }
      input.remove();
      button.hidden = false;
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") finish(true);
      if (event.key === "Escape") finish(false);
    });
    input.addEventListener("blur", () => finish(true));
  }
}
