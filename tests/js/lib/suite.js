// The setup most browser-test files share: one relay and one headless Chromium for the whole
// file, started before its tests and closed after them.
import { after, before } from "node:test";

import { launch } from "./browser.js";
import { startRelay } from "./relay.js";

/** Starts a relay (with `relayOptions`) and a browser before the file's tests and closes both
 * after them; `assign({ relay, browser })` hands them to the file. */
export function withRelayAndBrowser(assign, relayOptions) {
  let started = {};
  before(async () => {
    started = { relay: await startRelay(relayOptions), browser: await launch() };
    assign(started);
  });
  after(async () => {
    await started.browser?.close();
    await started.relay?.close();
  });
}
