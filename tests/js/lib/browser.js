// Headless Chromium for the browser tests (the package's and the demo's), through
// playwright-core and the machine's /usr/bin/chromium (never a downloaded browser), with a
// fresh profile per launch.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

/** A persistent context on a fresh profile directory (removed by `close()`); `viewport`
 * sets every page's size. Shared by the package's tests and the demo's (www/tests). */
export async function launch({ viewport } = {}) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "tidewire-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    ...(viewport ? { viewport } : {}),
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
  });
  const close = async () => {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { context, close };
}

/** Opens the harness page of `relay` and waits for the package to load. */
export async function openPage(context, url, { initScript } = {}) {
  const page = await context.newPage();
  page.consoleMessages = [];
  page.on("console", (message) => page.consoleMessages.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => page.consoleMessages.push(`pageerror: ${error.message}`));
  if (initScript) await page.addInitScript(initScript);
  await page.goto(`${url}/index.html`);
  await page.waitForFunction(() => window.harness !== undefined, null, { timeout: 30_000 });
  return page;
}
