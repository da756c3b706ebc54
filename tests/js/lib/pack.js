// The built package as a user gets it: `npm pack` of client-wasm/pkg, installed into scratch
// projects (with the project's own pinned dependencies, from npm's cache when it has them).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

import { PACKAGE_DIR } from "./relay.js";

/** Packs the package into `dir`; returns the tarball's path and the packed file names. */
export function pack(dir) {
  const output = execFileSync("npm", ["pack", "--json", "--pack-destination", dir], { cwd: PACKAGE_DIR }).toString();
  const [packed] = JSON.parse(output);
  return { tarball: path.join(dir, packed.filename), files: packed.files.map((file) => file.path) };
}

/** Installs `tarball` (and `dependencies`, `name@version` specs) into the project `dir`. */
export function install(dir, tarball, dependencies = []) {
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: path.basename(dir), private: true, type: "module" }));
  execFileSync(
    "npm",
    ["install", "--prefer-offline", "--no-audit", "--no-fund", "--no-package-lock", tarball, ...dependencies],
    { cwd: dir, stdio: "pipe" },
  );
  const installed = JSON.parse(fs.readFileSync(path.join(dir, "node_modules/tidewire/package.json"), "utf8"));
  assert.equal(installed.name, "tidewire");
}
