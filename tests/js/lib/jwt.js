// HS256 JSON Web Tokens for the auth tests (node:crypto only).
import crypto from "node:crypto";

const base64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** A token for `secret` allowing `read`/`write` patterns, expiring in `seconds`. */
export function token(secret, { read = ["*"], write = ["*"], seconds = 3600, sub = "tester" } = {}) {
  const header = base64url({ alg: "HS256", typ: "JWT" });
  const payload = base64url({ sub, exp: Math.floor(Date.now() / 1000) + seconds, tidewire: { read, write } });
  const signature = crypto.createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}
