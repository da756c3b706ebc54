// A short fingerprint of the whole board, shown in the live panel: two tabs that show the
// same seq and digest hold exactly the same records (the convergence check, made visible).

function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((key) => `${JSON.stringify(key)}:${canonical(value[key])}`).join(",")}}`;
  }
  return JSON.stringify(value ?? null);
}

/** FNV-1a (32-bit) of the canonical JSON of `[key, value]` pairs in key order, as 8 hex digits. */
export function digest(entries) {
  const text = canonical([...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  let hash = 0x811c9dc5;
  for (let index = 0; index < text.length; index += 1) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, "0");
}
