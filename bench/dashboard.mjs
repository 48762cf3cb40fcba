// Dashboard load in a real browser (on request only; docs/dashboard.md reports it):
// a host with 500 triggered jobs, each with one run, and a run whose output is
// 100,000 lines. Measures, in Debian's Chromium through playwright-core:
//   - the overview: time to first render of all 500 rows, time until every row's
//     strip of recent runs is drawn, JS heap;
//   - the run page: time until all 100,000 lines are loaded, time to scroll to the
//     middle and draw, JS heap.
//
//   cargo build --release && (cd tests/browser && npm ci) && node bench/dashboard.mjs
// JOBHOST_BIN picks the binary (default target/release/jobhost, else target/debug).
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { launch } from "../tests/browser/lib.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const bin = process.env.JOBHOST_BIN
  || [path.join(root, "target/release/jobhost"), path.join(root, "target/debug/jobhost")].find((p) => fs.existsSync(p));
if (!bin) { console.error("no jobhost binary: cargo build --release first"); process.exit(2); }
const JOBS_N = 500, LINES = 100000;

const sandbox = fs.mkdtempSync(path.join(os.tmpdir(), "jobhost-bench-"));
const jobs = path.join(sandbox, "jobs"), logs = path.join(sandbox, "logs");
for (let i = 0; i < JOBS_N; i++) {
  const dir = path.join(jobs, "triggered", `job-${String(i).padStart(3, "0")}`);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "run.sh"), `#!/bin/bash\necho "job ${i} did its work"\n`, { mode: 0o755 });
}
const big = path.join(jobs, "triggered", "big");
fs.mkdirSync(big, { recursive: true });
fs.writeFileSync(path.join(big, "run.sh"),
  `#!/bin/bash\nfor ((i = 1; i <= ${LINES}; i++)); do echo "line $i of the big run"; done\n`, { mode: 0o755 });
fs.mkdirSync(logs, { recursive: true });

const host = spawn(bin, ["run", "--jobs", jobs, "--logs", logs, "--listen", "127.0.0.1:0"], { stdio: "ignore" });
const cleanup = () => { try { host.kill("SIGTERM"); } catch (_) { /* gone */ } };
process.on("exit", cleanup);

async function until(what, fn, ms = 120000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => null);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
const read = (f) => fs.readFileSync(path.join(logs, f), "utf8").trim();
const url = await until("the host's URL file", async () => read(".jobhost-url"));
const token = read(".jobhost-token");
const api = async (method, p) => {
  const r = await fetch(url + p, { method, headers: { Authorization: `Bearer ${token}` } });
  return r.json();
};
await until("500 jobs listed", async () => (await api("GET", "/api/triggeredwebjobs")).length === JOBS_N + 1);
// One run each, a few at a time.
const names = (await api("GET", "/api/triggeredwebjobs")).map((j) => j.name);
for (let i = 0; i < names.length; i += 25) {
  await Promise.all(names.slice(i, i + 25).map((n) => api("POST", `/api/triggeredwebjobs/${n}/run`)));
}
await until("every run ended", async () => (await api("GET", "/api/triggeredwebjobs"))
  .every((j) => j.latest_run && j.latest_run.status !== "Running"));
const bigRun = (await api("GET", "/api/triggeredwebjobs/big")).latest_run.id;

const { context, page, close } = await launch();
try {
  const cdp = await context.newCDPSession(page);
  await cdp.send("Performance.enable");
  const heap = async () => {
    await cdp.send("HeapProfiler.collectGarbage");
    const m = (await cdp.send("Performance.getMetrics")).metrics;
    return (m.find((x) => x.name === "JSHeapUsedSize").value / 1048576).toFixed(1);
  };
  await page.addInitScript(([t]) => { sessionStorage.setItem("jobhost.token", t); }, [token]);

  const t0 = Date.now();
  await page.goto(url + "/");
  await page.waitForFunction((n) => document.querySelectorAll("#jobs tbody tr").length === n, JOBS_N + 1, { timeout: 60000 });
  const firstRender = Date.now() - t0;
  // Strips are fetched for the rows in view: wait for those on the first screen.
  await page.waitForFunction(() => [...document.querySelectorAll("#jobs tbody tr")].slice(0, 15)
    .every((tr) => tr.querySelector("svg, td:last-child span.muted:not([data-strip])")), null, { timeout: 120000 });
  const strips = Date.now() - t0;
  const overviewHeap = await heap();
  // A scroll to the end loads the strips that come into view.
  const t2 = Date.now();
  await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  await page.waitForFunction(() => [...document.querySelectorAll("#jobs tbody tr")].slice(-15)
    .every((tr) => tr.querySelector("svg, td:last-child span.muted:not([data-strip])")), null, { timeout: 120000 });
  const scrolled = Date.now() - t2;
  console.log(`overview, ${JOBS_N + 1} jobs: first render ${firstRender} ms, strips of the first screen ${strips} ms, strips after a scroll to the end ${scrolled} ms, JS heap ${overviewHeap} MiB`);

  const t1 = Date.now();
  await page.goto(`${url}/#/runs/big/${bigRun}`);
  // The run's lines plus the host's own (started, exited).
  await page.waitForFunction((n) => parseInt(document.getElementById("log-count")?.textContent || "0", 10) >= n, LINES, { timeout: 120000 })
    .catch(async (e) => { console.log(`stuck at: ${await page.evaluate(() => document.getElementById("log-count")?.textContent)}`); await page.screenshot({ path: "/tmp/bench-stuck.png" }); throw e; });
  const logLoad = Date.now() - t1;
  const scroll = await page.evaluate(async () => {
    const box = document.getElementById("log");
    const s = performance.now();
    box.scrollTop = box.scrollHeight / 2;
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    return performance.now() - s;
  });
  const runHeap = await heap();
  const rows = await page.evaluate(() => document.querySelectorAll("#log .ln").length);

  console.log(`run page, ${LINES} lines: loaded in ${logLoad} ms, scroll to the middle ${scroll.toFixed(0)} ms, ${rows} line elements in the DOM, JS heap ${runHeap} MiB`);
} finally {
  await close();
  cleanup();
  fs.rmSync(sandbox, { recursive: true, force: true });
}
