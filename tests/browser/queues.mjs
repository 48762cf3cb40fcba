// End-to-end checks of the dashboard's queue views in Debian's Chromium, driven by
// playwright-core. Run by tests/integration/browser.rs against a host it started, with:
//   E2E_URL, E2E_TOKEN   the host and its token
//   E2E_STATE            the test's state folder (the `q` job's good messages wait for STATE/go)
//   E2E_ARTIFACTS        where screenshots go
// The `q` job exits 65 (dead at once) for the payload "bad" and 0 otherwise; `plain`
// has no queue. Prints one line per check and exits non-zero at the first failure
// (with a screenshot of the page as it was).
import fs from "node:fs";
import path from "node:path";
import { launch, shot, expect, poll, step, done } from "./lib.mjs";

process.on("unhandledRejection", (e) => { console.log(`unhandled: ${e}`); process.exitCode = 1; });

const URL = process.env.E2E_URL;
const TOKEN = process.env.E2E_TOKEN;
const STATE = process.env.E2E_STATE;
if (!URL || !TOKEN || !STATE) {
  console.error("queues.mjs needs E2E_URL, E2E_TOKEN and E2E_STATE (tests/integration/browser.rs sets them)");
  process.exit(2);
}

const { page, close } = await launch();
const dialogs = [];
page.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(String(e)));

const auth = { Authorization: `Bearer ${TOKEN}` };
const MESSAGES = "/api/triggeredwebjobs/q/messages";
const apiGet = async (p) => (await fetch(URL + p, { headers: auth })).json();
async function enqueue(payload, query = "") {
  const r = await fetch(`${URL}${MESSAGES}${query}`, { method: "POST", headers: { ...auth, "Content-Type": "text/plain" }, body: payload });
  expect(r.status === 202, `enqueue ${payload} answers 202 (${r.status} ${await r.clone().text()})`);
  return (await r.json()).id;
}
const messagesOf = async (state) => (await apiGet(`${MESSAGES}?limit=1000${state ? "&state=" + state : ""}`)).messages;
const text = async (sel) => (await page.textContent(sel)) ?? "";
const row = (id) => `#messages tr[data-id='${id}']`;

let good1, good2, bad;
try {
  await step(page, "overview: a queue job's counts follow its messages live", async () => {
    await page.goto(URL + "/");
    await page.fill("#token", TOKEN);
    await page.press("#token", "Enter");
    await page.waitForSelector("#jobs tr[data-job='q'] .qbadge");
    await poll(async () => (await text("#jobs tr[data-job='q'] .qbadge")).includes("0 queued · 0 running · 0 dead"), "an empty queue at first");
    expect(!(await page.$("#jobs tr[data-job='plain'] .qbadge")), "a job without a queue has no badge");
    good1 = await enqueue("good1");
    good2 = await enqueue("good2");
    bad = await enqueue("bad");
    // good1 runs and waits for STATE/go; the two others wait behind it.
    await poll(async () => (await text("#jobs tr[data-job='q'] .qbadge")).includes("2 queued · 1 running · 0 dead"),
      "the badge shows 2 queued and 1 running without a reload");
    await shot(page, "queue-overview-busy");
    fs.writeFileSync(path.join(STATE, "go"), "");
    await poll(async () => (await text("#jobs tr[data-job='q'] .qbadge")).includes("0 queued · 0 running · 1 dead"),
      "then 1 dead once every message ran");
    expect(await page.$("#jobs tr[data-job='q'] .qbadge .bad"), "the dead count is marked");
    await shot(page, "queue-overview");
  });

  await step(page, "job page: counts, the messages newest first, the dead letter with its reason", async () => {
    await page.goto(URL + "/#/jobs/triggered/q");
    await page.waitForSelector(row(bad));
    await poll(async () => (await text("#q-dead")) === "1" && (await text("#q-queued")) === "0", "the counts: 1 dead, 0 queued");
    expect((await text("#q-oldest")) === "-", "no message waits");
    const ids = await page.$$eval("#messages tbody tr", (rows) => rows.map((r) => r.dataset.id));
    expect(JSON.stringify(ids) === JSON.stringify([bad, good2, good1]), `newest first: ${ids}`);
    await poll(async () => (await page.getAttribute(row(good1), "data-state")) === "Succeeded", "good1 Succeeded");
    const deadRow = await text(row(bad));
    expect(deadRow.includes("Dead") && deadRow.includes("cannot parse payload"), `the dead letter and why: ${deadRow}`);
    const title = await page.getAttribute(`${row(bad)} time`, "title");
    expect(title.includes("(UTC)") && title.includes("(local)"), `enqueued_at in local time, UTC on hover: ${title}`);
    // Its run is linked and opens the run page.
    const runs = await page.$$(`${row(bad)} a.q-run`);
    expect(runs.length === 1, `one run linked (${runs.length})`);
    await page.click(`${row(bad)} a.q-run`);
    await page.waitForSelector("#run-record");
    expect((await text("#run-exit")).includes("exit code 65"), `the run page of the dead letter: ${await text("#run-exit")}`);
    await page.goBack();
    await page.waitForSelector(row(bad));
    await page.selectOption("#q-state", "Dead");
    await poll(async () => (await page.$$("#messages tbody tr")).length === 1, "the Dead filter leaves the dead letter");
    await page.selectOption("#q-state", "Succeeded");
    await poll(async () => (await page.$$("#messages tbody tr")).length === 2, "the Succeeded filter leaves the two good ones");
    await page.selectOption("#q-state", "");
    await page.waitForSelector(row(bad));
    await shot(page, "queue-job");
  });

  await step(page, "payload and result are read with the token and shown as text", async () => {
    await page.click(`${row(bad)} .q-payload`);
    await page.waitForSelector("#q-view:not([hidden])");
    expect((await text("#q-view-text")) === "bad", `the payload: ${await text("#q-view-text")}`);
    expect((await text("#q-view-title")).includes("text/plain"), "and its content type");
    await page.click(`${row(good1)} .q-result`);
    await poll(async () => (await text("#q-view-text")) === "ok:good1", "the result the run wrote");
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#q-view-download")]);
    expect(fs.readFileSync(await download.path(), "utf8") === "ok:good1", "the download holds the result");
    await page.click("#q-view-close");
    expect(await page.$("#q-view[hidden]"), "closed");
  });

  await step(page, "requeue a dead letter with the keyboard: it runs again, goes dead again, the list follows", async () => {
    await page.focus(`${row(bad)} .q-requeue`);
    await page.keyboard.press("Enter");
    await poll(async () => (await text("#q-result")).includes("requeued"), "the requeue is confirmed");
    await poll(async () => (await page.$$(`${row(bad)} a.q-run`)).length === 2, "the row links its second run without a reload");
    await poll(async () => (await page.getAttribute(row(bad), "data-state")) === "Dead", "and is Dead again");
    const m = (await apiGet(`${MESSAGES}/${bad}`));
    expect(m.state === "Dead" && m.runs.length === 2, `the API agrees: ${m.state}, ${m.runs.length} runs`);
    await poll(async () => (await text("#q-dead")) === "1", "the counts: 1 dead");
  });

  await step(page, "delete all dead: a confirm step, 'Not now' changes nothing, yes deletes", async () => {
    await page.click("#q-delete-dead");
    await page.waitForSelector("#q-confirm-box:not([hidden])");
    expect((await text("#q-question")).includes("dead"), "the question says what goes");
    expect(await page.evaluate(() => document.activeElement?.id === "q-confirm-cancel"), "the safe answer has the focus");
    await shot(page, "queue-confirm");
    await page.keyboard.press("Enter");
    expect(await page.$("#q-confirm-box[hidden]"), "kept: the question is gone");
    expect((await messagesOf("Dead")).length === 1, "and the dead letter is still there");
    // Again, answering yes with the keyboard.
    await page.focus("#q-delete-dead");
    await page.keyboard.press("Enter");
    await page.waitForSelector("#q-confirm-box:not([hidden])");
    await page.keyboard.press("Shift+Tab");
    expect(await page.evaluate(() => document.activeElement?.id === "q-confirm"), "Shift+Tab reaches yes");
    await page.keyboard.press("Enter");
    await poll(async () => (await text("#q-result")).includes("1 Dead message(s) of q deleted"), `the API's answer: ${await text("#q-result")}`);
    await poll(async () => !(await page.$(row(bad))), "the dead letter left the list");
    await poll(async () => (await text("#q-dead")) === "0", "the counts: 0 dead");
    expect(await page.$eval("#q-delete-dead", (b) => b.disabled), "nothing dead: the buttons are off");
    expect((await messagesOf("Dead")).length === 0, "the API has no dead message");
    expect((await messagesOf("Succeeded")).length === 2, "the good ones are kept");
  });

  await step(page, "enqueue from the form; a bad priority shows the API's words and enqueues nothing", async () => {
    const before = (await messagesOf()).length;
    await page.fill("#q-payload", "from the form");
    await page.fill("#q-priority", "high");
    await page.click("#q-send");
    await page.waitForSelector(".errtext");
    const msg = await text(".errtext");
    expect(msg.includes("priority") && msg.includes("whole number") && msg.includes("high"), `the refusal names the field and value: ${msg}`);
    expect((await messagesOf()).length === before, "nothing was enqueued");
    expect((await page.inputValue("#q-payload")) === "from the form", "the form keeps what was typed");
    await shot(page, "queue-enqueue-error");
    await page.fill("#q-priority", "5");
    await page.click("#q-send");
    await poll(async () => (await text("#q-result")).includes("enqueued"), "the enqueue is confirmed");
    expect(!(await page.$(".errtext")), "the error is cleared by the next action");
    const id = (await text("#q-result")).split(" ")[1];
    await poll(async () => (await page.getAttribute(row(id), "data-state")) === "Succeeded", "the new message appears and succeeds");
    const cells = await page.$$eval(`${row(id)} td`, (tds) => tds.map((t) => t.textContent));
    expect(cells[3] === "5", `its priority: ${cells}`);
    const m = await apiGet(`${MESSAGES}/${id}`);
    expect(m.result === "ok:from the form" && m.priority === 5, `the API agrees: ${JSON.stringify(m)}`);
  });

  await step(page, "paging through many queued messages, and cancelling one", async () => {
    const later = [];
    // The oldest has a hostile name: shown as its characters.
    const hostile = "<img src=x onerror=alert(3)>";
    for (let i = 0; i < 22; i++) later.push(await enqueue(`later ${i}`, `?delay=3600${i ? "" : "&name=" + encodeURIComponent(hostile)}`));
    await page.selectOption("#q-state", "Queued");
    await poll(async () => (await page.$$("#messages tbody tr")).length === 20, "the first page holds 20");
    await poll(async () => (await text("#q-queued")) === "22", "the counts: 22 queued");
    expect(!(await text("#q-oldest")).startsWith("-"), "the oldest queued age is shown");
    const first = await page.$$eval("#messages tbody tr", (rows) => rows.map((r) => r.dataset.id));
    expect(first[0] === later[21], "newest first");
    expect((await text(row(later[21]))).includes("not before"), "a delayed message says when it may run");
    await page.click("#q-older");
    await poll(async () => (await page.$$("#messages tbody tr")).length === 2, "the second page holds the 2 oldest");
    const second = await page.$$eval("#messages tbody tr", (rows) => rows.map((r) => r.dataset.id));
    expect(second.join() === [later[1], later[0]].join(), `the oldest two: ${second}`);
    expect((await text(row(later[0]))).includes(`name: ${hostile}`), "the message's name, as its characters");
    expect((await page.evaluate(() => document.querySelectorAll("img").length)) === 0, "no element was made from it");
    expect(await page.$eval("#q-older", (b) => b.disabled), "no page after the last");
    await page.click(`${row(later[0])} .q-cancel`);
    await page.click("#q-confirm");
    await poll(async () => (await text("#q-result")) === `message ${later[0]} cancelled`, "the cancel is confirmed");
    await poll(async () => !(await page.$(row(later[0]))), "the cancelled message leaves the Queued list");
    expect((await apiGet(`${MESSAGES}/${later[0]}`)).state === "Cancelled", "it is Cancelled");
    await poll(async () => (await text("#q-queued")) === "21", "the counts: 21 queued");
    await page.click("#q-newer");
    await poll(async () => (await page.$$("#messages tbody tr")).length === 20, "back to the first page");
  });

  await step(page, "phone width and dark mode: the queue fits and follows the theme", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(URL + "/#/jobs/triggered/q");
    await page.waitForSelector("#messages tbody tr");
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    // On failure, name the widest elements (outside scrolling tables) to fix.
    const culprits = wide <= 392 ? [] : await page.evaluate(() => [...document.querySelectorAll("body *")]
      .filter((n) => n.getBoundingClientRect().right > 392 && !(n.parentElement && n.parentElement.closest(".table-wrap")))
      .slice(0, 8).map((n) => `${n.tagName.toLowerCase()}#${n.id}.${n.className} ${Math.round(n.getBoundingClientRect().right)}`));
    expect(wide <= 392, `the page fits 390 px (${wide}): ${culprits.join(", ")}`);
    await shot(page, "queue-job-phone");
    await page.setViewportSize({ width: 1400, height: 900 });
    await page.emulateMedia({ colorScheme: "dark" });
    await page.waitForSelector("#messages tbody tr");
    const bg = await page.evaluate(() => getComputedStyle(document.getElementById("q-enqueue").querySelector("textarea")).backgroundColor);
    expect(bg === "rgb(28, 33, 40)", `the form is dark too (${bg})`);
    await shot(page, "queue-job-dark");
    await page.emulateMedia({ colorScheme: "light" });
  });

  expect(dialogs.length === 0, `no dialog fired at all: ${dialogs}`);
  expect(pageErrors.length === 0, `no script error on the page: ${pageErrors.join("\n")}`);
  done();
} finally {
  await close();
}
process.exit(process.exitCode ?? 0);
