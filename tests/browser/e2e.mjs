// End-to-end checks of the dashboard in Debian's Chromium, driven by playwright-core.
// Run by tests/integration/browser.rs against a host it started, with:
//   E2E_URL, E2E_TOKEN   the host and its token
//   E2E_STATE            the test's state folder (the `greet` job waits for STATE/go)
//   E2E_ZIP              a zip to deploy
//   E2E_ARTIFACTS        where screenshots go
// Prints one line per check and exits non-zero at the first failure (with a
// screenshot of the page as it was).
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { launch, shot, expect, poll, step, done } from "./lib.mjs";

process.on("unhandledRejection", (e) => { console.log(`unhandled: ${e}`); process.exitCode = 1; });

const URL = process.env.E2E_URL;
const TOKEN = process.env.E2E_TOKEN;
const STATE = process.env.E2E_STATE;
const ZIP = process.env.E2E_ZIP;
if (!URL || !TOKEN || !STATE || !ZIP) {
  console.error("e2e.mjs needs E2E_URL, E2E_TOKEN, E2E_STATE and E2E_ZIP (tests/integration/browser.rs sets them)");
  process.exit(2);
}

const { context, page, close } = await launch();
const dialogs = [];
page.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(String(e)));

const logText = () => page.evaluate(() => document.getElementById("log")?.innerText ?? "");
const apiGet = async (p) => (await fetch(URL + p, { headers: { Authorization: `Bearer ${TOKEN}` } })).json();

try {
  await step(page, "login: the page asks for the token and refuses a wrong one", async () => {
    await page.goto(URL + "/");
    await page.waitForSelector("#login");
    await shot(page, "login");
    await page.fill("#token", "wrong-token-wrong-token");
    await page.press("#token", "Enter");
    await page.waitForSelector("#login-message");
    expect((await page.textContent("#login-message")).includes("refused"), "a wrong token is refused");
    await page.fill("#token", TOKEN);
    await page.press("#token", "Enter");
    await page.waitForSelector("#jobs tbody tr[data-job='greet']");
    const stored = await page.evaluate(() => ({ token: sessionStorage.getItem("jobhost.token"), cookie: document.cookie }));
    expect(stored.token === TOKEN && stored.cookie === "", "the token is kept for the tab only, no cookie");
  });

  await step(page, "overview: every job, status, counts, filters", async () => {
    for (const name of ["greet", "web", "fails", "xss", "broken"]) await page.waitForSelector(`#jobs tr[data-job='${name}']`);
    const failing = await page.textContent("#count-failing");
    expect(Number(failing) >= 2, `failing counts the failed run and the broken job (${failing})`);
    await poll(async () => (await page.textContent("#jobs tr[data-job='web']")).includes("Running"), "web shows Running");
    expect((await page.textContent("#jobs tr[data-job='broken']")).includes("Error"), "broken shows Error");
    const nightly = await page.textContent("#jobs tr[data-job='nightly']");
    expect(nightly.includes("0 0 3 * * *") && /next \S.*\((in|now)/.test(nightly), `the schedule and its next fire: ${nightly}`);
    const title = await page.getAttribute("#jobs tr[data-job='nightly'] time", "title");
    expect(title.includes("(UTC)") && title.includes("(local)"), `local time and UTC on hover: ${title}`);
    // The strip of recent runs is drawn for a job with runs.
    await page.waitForSelector("#jobs tr[data-job='fails'] svg rect");
    await page.fill("#f-name", "fai");
    await poll(async () => (await page.$$("#jobs tbody tr")).length === 1, "the name filter leaves one job");
    await page.fill("#f-name", "");
    await page.selectOption("#f-type", "continuous");
    await poll(async () => (await page.$$("#jobs tbody tr")).length === 2, "the type filter leaves web and tick");
    await page.selectOption("#f-type", "");
    await page.selectOption("#f-status", "Error");
    await poll(async () => (await page.$$("#jobs tbody tr")).length === 1, "the status filter leaves broken");
    await page.selectOption("#f-status", "");
    await shot(page, "overview");
  });

  await step(page, "keyboard: a job is reachable and opened with Tab and Enter", async () => {
    await page.goto(URL + "/#/");
    await page.waitForSelector("#jobs tr[data-job='broken']");
    await page.focus("#f-name");
    let found = false;
    for (let i = 0; i < 40 && !found; i++) {
      await page.keyboard.press("Tab");
      found = await page.evaluate(() => document.activeElement?.classList.contains("jobname"));
    }
    expect(found, "Tab reaches a job link");
    await page.keyboard.press("Enter");
    await page.waitForSelector("h2");
    expect(page.url().includes("#/jobs/"), `Enter opens the job (${page.url()})`);
  });

  await step(page, "a job in error: why, its settings problem, and no run button", async () => {
    await page.goto(URL + "/#/jobs/triggered/broken");
    await page.waitForSelector("#job-error");
    expect((await page.textContent("#job-error")).includes("settings.job"), "the error names settings.job");
    expect(!(await page.$("#act-run")), "no run button on a job in error");
    expect((await page.textContent("main")).includes("cannot run"), "and says why");
  });

  await step(page, "run a triggered job with arguments and watch its log arrive live", async () => {
    await page.goto(URL + "/#/jobs/triggered/greet");
    await page.waitForSelector("#act-run");
    await page.fill("#run-args", 'hello "two words"');
    await page.click("#act-run");
    await poll(async () => (await logText()).includes("arg=[two words]"), "the run's first lines in the log");
    expect((await logText()).includes("arg=[hello]"), "each argument as given");
    expect(!(await logText()).includes("after go"), "the run is still waiting");
    await page.waitForSelector("#act-cancel");
    fs.writeFileSync(path.join(STATE, "go"), "");
    await poll(async () => (await logText()).includes("after go"), "a line written later arrives without a reload");
    await poll(async () => (await page.textContent("#runs tbody")).includes("Success"), "the run table shows the run as Success");
    await page.waitForSelector("main svg[aria-label^='durations'] rect");
    await shot(page, "job-triggered");
    // Search and pause work on what arrived.
    await page.fill("#log-search", "two words");
    await poll(async () => (await page.textContent("#log-count")).includes("1 of"), "search finds one line");
    await page.fill("#log-search", "");
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#log-download")]);
    const saved = fs.readFileSync(await download.path(), "utf8");
    expect(saved.includes("after go"), "the download holds the log");
  });

  await step(page, "stop and start a continuous job", async () => {
    await page.goto(URL + "/#/jobs/continuous/web");
    await page.waitForSelector("#act-stop");
    await poll(async () => (await logText()).includes("ready"), "the job log shows its line");
    await page.click("#act-stop");
    await page.waitForSelector("#act-start");
    await poll(async () => (await page.textContent("main")).includes("Stopped"), "web says Stopped");
    await page.click("#act-start");
    await page.waitForSelector("#act-stop");
    await poll(async () => (await page.textContent(".record")).includes("Running"), "web says Running again");
    await shot(page, "job-continuous");
  });

  await step(page, "a dropped connection resumes the live log without gaps or repeats", async () => {
    // A proxy between the page and the host whose connections the test can cut: a
    // real drop, which the browser's offline mode does not cause for open streams.
    const target = new globalThis.URL(URL);
    const open = new Set();
    const proxy = http.createServer((req, res) => {
      const up = http.request({ host: target.hostname, port: target.port, path: req.url, method: req.method,
        headers: { ...req.headers, host: target.host } }, (ur) => { res.writeHead(ur.statusCode, ur.headers); ur.pipe(res); });
      up.on("error", () => res.destroy());
      open.add(up);
      up.on("close", () => open.delete(up));
      req.pipe(up);
    });
    const sockets = new Set();
    proxy.on("connection", (s) => { sockets.add(s); s.on("close", () => sockets.delete(s)); });
    await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
    const p3 = await context.newPage();
    try {
      await p3.goto(`http://127.0.0.1:${proxy.address().port}/#/jobs/continuous/tick`);
      await p3.fill("#token", TOKEN);
      await p3.press("#token", "Enter");
      const ticks = async () => {
        const [download] = await Promise.all([p3.waitForEvent("download"), p3.click("#log-download")]);
        return fs.readFileSync(await download.path(), "utf8").split("\n").map((l) => /INFO\] tick (\d+)$/.exec(l)).filter(Boolean).map((m) => Number(m[1]));
      };
      await poll(async () => (await ticks()).length >= 5, "ticks arrive through the proxy");
      const before = (await ticks()).at(-1);
      for (const s of sockets) s.destroy();
      for (const u of open) u.destroy();
      await poll(async () => (await ticks()).at(-1) >= before + 10, "ticks arrive again after the drop");
      const all = await ticks();
      const gaps = all.filter((n, i) => i > 0 && n !== all[i - 1] + 1);
      expect(gaps.length === 0, `consecutive ticks, none missing or repeated: ${all.join(",")}`);
    } finally {
      await p3.close();
      proxy.close();
      for (const s of sockets) s.destroy();
    }
  });

  await step(page, "open a failed run and read its error", async () => {
    await page.goto(URL + "/#/jobs/triggered/fails");
    await page.waitForSelector("#runs a.mono");
    await page.click("#runs a.mono");
    await page.waitForSelector("#run-record");
    expect((await page.textContent("#run-status")) === "Failed", "the run Failed");
    expect((await page.textContent("#run-exit")).includes("exit code 3"), "exit code 3");
    await poll(async () => (await logText()).includes("boom: disk full"), "its stderr line");
    const errLine = await page.$eval("#log .ln.err", (n) => n.textContent);
    expect(errLine.includes("boom: disk full"), "stderr lines are marked as errors");
    await shot(page, "run-failed");
  });

  await step(page, "deploy a zip, a single dropped file, and see an API error as the API words it", async () => {
    await page.goto(URL + "/#/");
    await page.waitForSelector("#drop");
    await page.fill("#d-name", "deployed");
    await page.setInputFiles("#d-file", ZIP);
    await page.waitForSelector("#d-link");
    await page.waitForSelector("#jobs tr[data-job='deployed']");
    // A drop of one script, named after the file.
    await page.fill("#d-name", "");
    await page.evaluate(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(["#!/bin/bash\necho dropped\n"], "dropped.sh", { type: "text/x-sh" }));
      document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    await page.waitForSelector("#jobs tr[data-job='dropped']");
    // Not a zip: the API's words, shown as text.
    await page.evaluate(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(["not a zip at all"], "bad.zip", { type: "application/zip" }));
      document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    await page.waitForSelector(".errtext");
    const msg = await page.textContent(".errtext");
    expect(/zip/i.test(msg) && msg.length > 20, `the API's message: ${msg}`);
    await shot(page, "deploy-error");
    // It stays until dismissed.
    await page.click("#errclose");
    expect(!(await page.$(".errtext")), "dismissed");
  });

  await step(page, "hostile text is shown as text: log lines and settings never run", async () => {
    await page.goto(URL + "/#/jobs/triggered/xss");
    await poll(async () => (await logText()).includes("<img src=x onerror=alert(1)>"), "the log line, as its characters");
    expect((await page.textContent("#settings")).includes("<img src=y onerror=alert(2)>"), "the setting, as its characters");
    const imgs = await page.evaluate(() => document.querySelectorAll("img").length);
    expect(imgs === 0, "no element was made from the text");
    await page.goto(URL + "/#/runs/xss/" + (await apiGet("/api/triggeredwebjobs/xss")).latest_run.id);
    await poll(async () => (await logText()).includes("<img src=x onerror=alert(1)>"), "the run page too");
    expect(dialogs.length === 0, `no dialog fired: ${dialogs}`);
    await shot(page, "xss");
  });

  await step(page, "another origin cannot POST: no run starts", async () => {
    const before = (await apiGet("/api/triggeredwebjobs/greet/history")).runs.length;
    const target = URL + "/api/triggeredwebjobs/greet/run";
    const evil = http.createServer((req, res) => {
      res.setHeader("Content-Type", "text/html");
      res.end(`<!doctype html><body><form id=f method=POST action="${target}" enctype="text/plain"><input name=a value=b></form>
<script>
window.results = {};
fetch(${JSON.stringify(target)}, { method: "POST", mode: "no-cors", body: "x" }).then(() => results.simple = "sent", (e) => results.simple = "blocked");
fetch(${JSON.stringify(target)}, { method: "POST", headers: { Authorization: "Bearer ${TOKEN}" } }).then((r) => results.cors = "answered " + r.status, (e) => results.cors = "blocked");
</script></body>`);
    });
    await new Promise((r) => evil.listen(0, "127.0.0.1", r));
    // Another site altogether (localhost is not 127.0.0.1 to a browser).
    const other = `http://localhost:${evil.address().port}/`;
    const p2 = await context.newPage();
    p2.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
    await p2.goto(other);
    await poll(async () => p2.evaluate(() => window.results.simple && window.results.cors), "both requests settled");
    const results = await p2.evaluate(() => window.results);
    expect(results.cors === "blocked", `a request with the token from another origin is blocked by the browser (${results.cors})`);
    // A form post is a navigation: the API's refusal is what the user would see.
    await Promise.all([p2.waitForNavigation(), p2.evaluate(() => document.getElementById("f").submit())]);
    const body = await p2.textContent("body");
    expect(/another site|origin|refused/i.test(body), `the form post is refused: ${body}`);
    await p2.close();
    evil.close();
    const after = (await apiGet("/api/triggeredwebjobs/greet/history")).runs.length;
    expect(after === before, `no run started from the other origin (${before} -> ${after})`);
  });

  await step(page, "phone width: nothing wider than the window", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(URL + "/#/");
    await page.waitForSelector("#jobs tr[data-job='greet']");
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    expect(wide <= 392, `the page fits 390 px (${wide})`);
    await shot(page, "overview-phone");
    await page.goto(URL + "/#/jobs/triggered/greet");
    await page.waitForSelector("#runs");
    await shot(page, "job-phone");
    await page.setViewportSize({ width: 1400, height: 900 });
  });

  await step(page, "dark mode: the system's choice, and the toggle", async () => {
    await page.emulateMedia({ colorScheme: "dark" });
    await page.goto(URL + "/#/");
    await page.waitForSelector("#jobs tr[data-job='greet']");
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    expect(bg === "rgb(20, 24, 29)", `a dark background (${bg})`);
    await shot(page, "overview-dark");
    await page.click("#theme");
    const bg2 = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    expect(bg2 === "rgb(246, 247, 249)", `the toggle switches to light (${bg2})`);
    await page.emulateMedia({ colorScheme: "light" });
  });

  expect(dialogs.length === 0, `no dialog fired at all: ${dialogs}`);
  expect(pageErrors.length === 0, `no script error on the page: ${pageErrors.join("\n")}`);
  done();
} finally {
  await close();
}
// Servers and keep-alive sockets of the checks above must not hold the process.
process.exit(process.exitCode ?? 0);
