// Who this tab is on the board: a friendly name and a colour, kept per tab (sessionStorage)
// so two windows of one browser are two people. `?name=Ann` picks the name.

const ADJECTIVES = ["Calm", "Swift", "Bright", "Brave", "Lucky", "Quiet", "Sunny", "Clever", "Gentle", "Bold"];
const ANIMALS = ["Otter", "Heron", "Puffin", "Seal", "Narwhal", "Orca", "Pelican", "Dolphin", "Manta", "Walrus"];
export const COLORS = ["#0b5cff", "#e5484d", "#12a594", "#f76b15", "#8e4ec6", "#d6409f", "#0090ff", "#2b9a66", "#ab6400", "#3e63dd"];

const KEY = "tidewire-demo-identity";

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

/** The tab's identity `{ name, color }`, created on first use. */
export function loadIdentity() {
  const fromUrl = new URLSearchParams(location.search).get("name");
  let identity;
  try {
    identity = JSON.parse(sessionStorage.getItem(KEY) ?? "null");
  } catch {
    identity = null;
  }
  if (!identity || typeof identity.name !== "string" || typeof identity.color !== "string") {
    identity = { name: `${pick(ADJECTIVES)} ${pick(ANIMALS)}`, color: pick(COLORS) };
  }
  if (fromUrl) identity.name = fromUrl.slice(0, 32);
  saveIdentity(identity);
  return identity;
}

export function saveIdentity(identity) {
  try {
    sessionStorage.setItem(KEY, JSON.stringify(identity));
  } catch {
    // Storage can be disabled; the identity then lasts as long as the page.
  }
}

/** Up to two initials of a name. */
export function initials(name) {
  const words = String(name).trim().split(/\s+/).filter(Boolean);
  return (words.length > 1 ? words[0][0] + words[1][0] : (words[0] ?? "?").slice(0, 2)).toUpperCase();
}
