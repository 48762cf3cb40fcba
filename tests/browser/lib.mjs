// Shared by e2e.mjs and bench/dashboard.mjs: Debian's Chromium through playwright-core
// (never a browser download), a fresh profile per run, screenshots as artifacts.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.E2E_CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = process.env.E2E_ARTIFACTS || path.resolve("../../target/browser-artifacts");

/** Chromium, headless, with a profile made for this run and removed after it. */
export async function launch(viewport = { width: 1400, height: 900 }) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "jobhost-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true, // playwright passes --headless
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport,
    acceptDownloads: true,
  });
  context.setDefaultTimeout(20000);
  const page = context.pages()[0] || (await context.newPage());
  const close = async () => {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { context, page, close };
}

export async function shot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true }).catch((e) => console.log(`(no screenshot ${name}: ${e.message})`));
  return file;
}

export function expect(cond, what) {
  if (!cond) throw new Error(`expected: ${what}`);
}

/** Polls `fn` until it is truthy, with a generous deadline that only bounds a hang. */
export async function poll(fn, what, deadlineMs = 20000) {
  const end = Date.now() + deadlineMs;
  let last;
  for (;;) {
    try { if (await fn()) return; } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}${last ? ` (last error: ${last.message})` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

let count = 0;
/** One named check: "ok - NAME", or a screenshot of the failure and exit 1. */
export async function step(page, name, fn) {
  try {
    await fn();
    count++;
    console.log(`ok - ${name}`);
  } catch (e) {
    console.log(`FAILED - ${name}\n${e.stack || e}`);
    await shot(page, "FAILED");
    throw e;
  }
}

export function done() {
  console.log(`all browser checks passed (${count})`);
}
