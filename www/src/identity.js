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
  if (fromUrl) {
    // A name from the URL (shared links, tests) gets a colour derived from it.
    identity.name = fromUrl.slice(0, 32);
    let hash = 0;
    for (const char of identity.name) hash = (Math.imul(hash, 33) + char.charCodeAt(0)) >>> 0;
    identity.color = COLORS[hash % COLORS.length];
  }
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
