// Small notifications at the bottom of the page (failed writes, undo of a delete). Errors are
// shown to the user rather than logged, so a normal session leaves the console clean.

const container = () => document.getElementById("toasts");

/**
 * Shows `text` for a few seconds. `action` is an optional `{ label, run }` button.
 * @param {string} text
 * @param {"info" | "error"} [kind]
 */
export function toast(text, kind = "info", action = null) {
  const element = document.createElement("div");
  element.className = `toast ${kind}`;
  const message = document.createElement("span");
  message.textContent = text;
  element.append(message);
  if (action) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn ghost small on-dark";
    button.textContent = action.label;
    button.addEventListener("click", () => {
      action.run();
      element.remove();
    });
    element.append(button);
  }
  container().append(element);
  while (container().children.length > 3) container().firstElementChild.remove();
  setTimeout(() => element.classList.add("leaving"), kind === "error" ? 6000 : 4500);
  setTimeout(() => element.remove(), kind === "error" ? 6400 : 4900);
}

/** Runs a write and reports its failure as a toast; resolves with the seq or `null`. */
export async function attempt(promise, what) {
  try {
    return await promise;
  } catch (error) {
    const code = error?.code ? ` (${error.code})` : "";
    toast(`Could not ${what}: ${error?.message ?? error}${code}`, "error");
    return null;
  }
}
