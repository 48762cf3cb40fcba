// The operator console (docs/dashboard.md), served at /dashboard.js so the page's
// Content-Security-Policy allows scripts from this server only.
//
// Rules this file keeps:
// - Everything from the API (job names, settings, log lines, errors) becomes DOM text
//   through `el()` and `textContent`; nothing is ever parsed as HTML, so markup in a log line is
//   shown as its characters and never runs.
// - The token is asked once in a form, kept in sessionStorage (this tab only, gone when
//   it closes) and sent as `Authorization: Bearer`; the browser holds no credential of
//   its own for this server, so a page on another site has nothing to ride on.
// - Live state comes from `GET /api/events` (server-sent events read through fetch,
//   since EventSource cannot send a header); logs follow the same way and resume from
//   the last event id after a dropped connection, without gaps or repeats.
// - Pages are addressed by the URL fragment (#/jobs/TYPE/NAME, #/runs/NAME/ID), so any
//   page can be linked and the server serves one document.
// - Queue counts are not in the event stream's job objects: they are read from the
//   job's own URL when a `message` event says they changed, at most every 500 ms per
//   job, so a burst of messages costs two reads, not one per message.
"use strict";

const TOKEN_KEY = "jobhost.token";
const THEME_KEY = "jobhost.theme";
const $ = (id) => document.getElementById(id);

// ----- DOM ------------------------------------------------------------------------

/** An element; `attrs` are properties or attributes, children are nodes or text. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  append(node, children);
  return node;
}
function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
const link = (href, text, attrs) => el("a", { href, ...attrs }, text);
const jobHref = (type, name) => `#/jobs/${type}/${encodeURIComponent(name)}`;
const runHref = (name, id) => `#/runs/${encodeURIComponent(name)}/${encodeURIComponent(id)}`;

// ----- time -----------------------------------------------------------------------

function ago(iso) {
  if (!iso) return "-";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.round((Date.now() - t) / 1000);
  const future = s < 0;
  const a = Math.abs(s);
  let text;
  if (a < 5) return future ? "now" : "just now";
  if (a < 60) text = `${a} s`;
  else if (a < 3600) text = `${Math.round(a / 60)} min`;
  else if (a < 86400) text = `${Math.round(a / 3600)} h`;
  else text = `${Math.round(a / 86400)} d`;
  return future ? `in ${text}` : `${text} ago`;
}
/** A <time>: human text, the local date-time and UTC on hover. `absolute`: the local
 * date and time; "clock": the local time (with the date when not today) and how far. */
function when(iso, absolute) {
  if (!iso) return el("span", { class: "muted" }, "-");
  const d = new Date(iso);
  const today = d.toDateString() === new Date().toDateString();
  const clock = today ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const text = absolute === "clock" ? `${clock} (${ago(iso)})` : absolute ? d.toLocaleString() : ago(iso);
  return el("time", { datetime: iso, title: `${d.toLocaleString()} (local)\n${d.toISOString()} (UTC)` }, text);
}
function duration(ms) {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${(ms / 60000).toFixed(ms < 600000 ? 1 : 0)} min`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

// ----- API ------------------------------------------------------------------------

const token = () => sessionStorage.getItem(TOKEN_KEY);
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
async function api(method, path, opts = {}) {
  const headers = { Authorization: `Bearer ${token()}`, ...(opts.headers || {}) };
  const r = await fetch(path, { method, headers, body: opts.body, credentials: "omit", cache: "no-store", signal: opts.signal });
  if (r.status === 401) { logout("The token was refused: enter it again."); throw new ApiError(401, "the token was refused"); }
  if (!r.ok) {
    const text = await r.text();
    let m = text;
    try { m = JSON.parse(text).message || text; } catch (_) { /* not JSON */ }
    throw new ApiError(r.status, m || `${r.status} ${r.statusText}`);
  }
  return opts.raw ? r : (r.headers.get("content-type") || "").includes("json") ? r.json() : r.text();
}

/**
 * Reads server-sent events from `path` through fetch (EventSource cannot send a
 * header). Reconnects after a drop with `Last-Event-ID`, so nothing is missed or
 * repeated. `onEvent(type, data, id)`; returns a function that stops it.
 */
function sse(path, onEvent, opts = {}) {
  let lastId = opts.lastId || null, stopped = false, ctrl = null, retry = 500;
  async function run() {
    while (!stopped) {
      ctrl = new AbortController();
      try {
        const headers = { Accept: "text/event-stream" };
        if (lastId) headers["Last-Event-ID"] = lastId;
        const r = await api("GET", path, { headers, signal: ctrl.signal, raw: true });
        opts.onOpen && opts.onOpen();
        retry = 500;
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = "", data = [], type = "message", id = null;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.search(/\r\n|\r|\n/)) >= 0) {
            const line = buf.slice(0, i);
            buf = buf.slice(buf[i] === "\r" && buf[i + 1] === "\n" ? i + 2 : i + 1);
            if (line === "") {
              if (id !== null) lastId = id;
              if (data.length) onEvent(type, data.join("\n"), lastId);
              data = []; type = "message"; id = null;
              continue;
            }
            if (line.startsWith(":")) continue;
            const c = line.indexOf(":");
            const field = c < 0 ? line : line.slice(0, c);
            let v = c < 0 ? "" : line.slice(c + 1);
            if (v.startsWith(" ")) v = v.slice(1);
            if (field === "data") data.push(v);
            else if (field === "event") type = v;
            else if (field === "id") id = v;
          }
        }
        if (opts.once) { opts.onEnd && opts.onEnd(); return; }
      } catch (e) {
        if (stopped) return;
        if (e instanceof ApiError && e.status !== 503) { opts.onError && opts.onError(e); return; }
      }
      if (stopped) return;
      opts.onDrop && opts.onDrop();
      await new Promise((res) => setTimeout(res, retry));
      retry = Math.min(retry * 2, 10000);
    }
  }
  run();
  return () => { stopped = true; if (ctrl) ctrl.abort(); };
}

// ----- messages -------------------------------------------------------------------

/** An error stays until dismissed or until the next action the user takes. */
function showError(message) {
  const box = el("div", { class: "error-box" }, el("span", { class: "errtext" }, message),
    el("button", { type: "button", id: "errclose", onclick: clearError }, "dismiss"));
  $("toast").replaceChildren(box);
}
function clearError() { $("toast").replaceChildren(); }
async function act(label, fn) {
  clearError();
  try { return await fn(); } catch (e) { if (e.status !== 401) showError(`${label}: ${e.message}`); return undefined; }
}

// ----- state ----------------------------------------------------------------------

const state = {
  jobs: new Map(),       // "type/name" -> job object
  history: new Map(),    // name -> runs (newest first)
  historyLoading: new Set(),
  queues: new Map(),     // triggered job name -> its `queue` counts, or null when it has none
  filters: { type: "", status: "", name: "" },
  health: null,
  stopEvents: null,
};
const keyOf = (j) => `${j.type}/${j.name}`;

function statusOf(j) {
  if (j.type === "continuous") return j.error && j.status !== "Running" ? "Error" : j.status;
  if (j.error) return "Error";
  if (j.running) return "Running";
  return j.disabled ? "Disabled" : "Ready";
}
function tone(status) {
  if (["Running", "Success", "Ready", "Succeeded"].includes(status)) return "good";
  if (["Error", "Failed", "Aborted", "Dead"].includes(status)) return "bad";
  if (["Stopped", "Disabled", "Cancelled"].includes(status)) return "off";
  return "warn";
}
function reasonOf(j) {
  if (j.error) return j.error;
  if (j.type === "continuous" && j.status !== "Running") return j.detailed_status;
  if (j.type === "triggered" && j.disabled) return "disable.job is present: scheduled runs are off";
  return "";
}
function failing(j) {
  const st = statusOf(j);
  return st === "Error" || st === "PendingRestart" || (j.type === "triggered" && j.latest_run && tone(j.latest_run.status) === "bad");
}

function startEvents() {
  if (state.stopEvents) state.stopEvents();
  state.stopEvents = sse("/api/events", (type, data) => {
    const d = JSON.parse(data);
    if (type === "snapshot") {
      state.jobs = new Map(d.jobs.map((j) => [keyOf(j), j]));
      loadQueues();
    } else if (type === "job") {
      const before = state.jobs.get(keyOf(d));
      state.jobs.set(keyOf(d), d);
      // A job that gained (or lost) its queue, or one not counted yet.
      if (hasQueue(d) && (!state.queues.has(d.name) || !before || !hasQueue(before))) refreshQueue(d.name);
      else if (d.type === "triggered" && !hasQueue(d) && state.queues.has(d.name)) setQueue(d.name, null);
    } else if (type === "removed") {
      state.jobs.delete(`${d.type}/${d.name}`);
      if (d.type === "triggered") state.queues.delete(d.name);
    } else if (type === "message") {
      refreshQueue(d.job);
      if (view.onMessage) view.onMessage(d);
    } else if (type === "run") {
      // The strip and the history need the new run: fetch that job's history again.
      state.history.delete(d.job);
      if (view.onRun) view.onRun(d);
    }
    scheduleRender();
  }, {
    onOpen: () => { $("live").textContent = "live"; },
    onDrop: () => { $("live").textContent = "reconnecting…"; },
  });
}

// ----- queue counts ---------------------------------------------------------------

const QUEUE_REFRESH_MS = 500;
/** Whether `j` is a triggered job whose settings.job gives it a message queue. */
function hasQueue(j) {
  return j.type === "triggered" && !!j.settings && typeof j.settings === "object" && j.settings.queue !== undefined;
}
/** Keeps `q` (a job's `queue` counts) when it differs from what is shown, and redraws. */
function setQueue(name, q) {
  const prev = state.queues.get(name);
  if (state.queues.has(name) && JSON.stringify(prev) === JSON.stringify(q ?? null)) return;
  state.queues.set(name, q ?? null);
  if (view.onQueue) view.onQueue(name);
  scheduleRender();
}
/** Every queue job's counts in one request (after a snapshot). */
async function loadQueues() {
  if (![...state.jobs.values()].some(hasQueue)) return;
  try {
    const jobs = await api("GET", "/api/triggeredwebjobs");
    for (const j of Array.isArray(jobs) ? jobs : []) if (hasQueue(j)) setQueue(j.name, j.queue);
  } catch (_) { /* the next message event tries again */ }
}
const queueReads = new Map(); // name -> { last, timer, asked, applied }
/** Reads `name`'s counts again: now, or once QUEUE_REFRESH_MS has passed since the
 * last read; calls meanwhile are folded into that one read. */
function refreshQueue(name) {
  let t = queueReads.get(name);
  if (!t) queueReads.set(name, t = { last: 0, timer: null, asked: 0, applied: 0 });
  if (t.timer) return;
  t.timer = setTimeout(async () => {
    t.timer = null;
    t.last = Date.now();
    const n = ++t.asked;
    try {
      const j = await api("GET", `/api/triggeredwebjobs/${encodeURIComponent(name)}`);
      // Answers can overtake each other: an older one never replaces a newer one.
      if (n < t.applied) return;
      t.applied = n;
      setQueue(name, hasQueue(j) ? j.queue : null);
    } catch (e) {
      if (e.status === 404) state.queues.delete(name);
    }
  }, Math.max(0, t.last + QUEUE_REFRESH_MS - Date.now()));
}

async function loadHistory(name) {
  if (state.historyLoading.has(name)) return;
  state.historyLoading.add(name);
  try {
    const h = await api("GET", `/api/triggeredwebjobs/${encodeURIComponent(name)}/history`);
    state.history.set(name, h.runs);
    scheduleRender();
  } catch (_) { /* shown when the user opens the job */ } finally { state.historyLoading.delete(name); }
}
// Overview strips fetch histories a few at a time, not 500 at once.
const historyQueue = [];
let historyActive = 0;
function wantHistory(name) {
  if (state.history.has(name) || state.historyLoading.has(name) || historyQueue.includes(name)) return;
  historyQueue.push(name);
  pumpHistory();
}
// A strip's history is fetched when its row scrolls into view: 500 jobs cost a
// screenful of requests, not 500.
const stripObserver = new IntersectionObserver((entries) => {
  for (const e of entries) {
    if (!e.isIntersecting) continue;
    stripObserver.unobserve(e.target);
    wantHistory(e.target.dataset.strip);
  }
}, { rootMargin: "200px" });
function pumpHistory() {
  while (historyActive < 4 && historyQueue.length) {
    const name = historyQueue.shift();
    historyActive++;
    loadHistory(name).finally(() => { historyActive--; pumpHistory(); });
  }
}

// ----- rendering ------------------------------------------------------------------

let view = { render: () => {} };
let pending = false, forced = false;
/** One render per frame, however many events arrive. `force`: redraw even what did
 * not change (relative times age). */
function scheduleRender(force) {
  if (force) forced = true;
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; const f = forced; forced = false; view.render(f); });
}

/** A small chart of runs: one bar each, height by duration, colour by outcome. */
function runChart(runs, width, height, label, slots = 20) {
  const list = runs.slice(0, 60).reverse();
  const max = Math.max(1, ...list.map((r) => r.duration_ms || 0));
  // A fixed slot per run (20 on the overview), so one run is one thin bar, not a block.
  const w = Math.max(3, Math.floor(width / Math.max(list.length, slots)) - 1);
  const root = svg("svg", { class: "strip", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  list.forEach((r, i) => {
    const h = Math.max(3, Math.round(((r.duration_ms || 0) / max) * (height - 2)));
    const colour = { good: "var(--ok)", bad: "var(--bad)", warn: "var(--warn)", off: "var(--off)" }[tone(r.status)];
    root.append(svg("rect", { x: i * (w + 1), y: height - h, width: w, height: h, fill: colour },
      svg("title", {}, `${r.status} · ${duration(r.duration_ms)} · ${new Date(r.start_time).toLocaleString()}`)));
  });
  return root;
}

function statusCell(j) {
  const st = statusOf(j);
  return [el("span", { class: `st ${tone(st)}` }, st), reasonOf(j) ? el("div", { class: "muted" }, reasonOf(j)) : null];
}

/** "queue: 12 queued · 2 running · 1 dead" under a queue job's name. */
function queueBadge(q) {
  if (q === undefined) return el("div", { class: "qbadge muted" }, "queue: …");
  if (q === null) return null;
  if (q.error) return el("div", { class: "qbadge bad", title: q.error }, "queue: unavailable");
  const oldest = q.oldest_queued_age_s !== null && q.oldest_queued_age_s !== undefined
    ? `the oldest queued message has waited ${waited(q.oldest_queued_age_s)}` : "no message waits";
  return el("div", { class: "qbadge muted", title: oldest },
    "queue: ", `${q.queued} queued`, " · ", `${q.running} running`, " · ",
    el("span", { class: q.dead ? "bad" : "" }, `${q.dead} dead`));
}

const rowCache = new Map();
function buildRow(j) {
  let sched = "-", last = "-", strip = null;
  if (j.type === "triggered") {
    if (j.schedule) {
      sched = [el("code", {}, j.schedule), " ", el("span", { class: "muted" }, j.timezone || ""),
        el("div", { class: "muted" }, "next ", j.next_fire ? when(j.next_fire, "clock") : "-")];
    } else sched = j.error ? el("span", { class: "muted" }, "unknown: settings have errors") : "on demand";
    const r = j.latest_run;
    if (r) last = [el("span", { class: `st ${tone(r.status)}` }, r.status), " ", el("span", { class: "num" }, duration(r.duration_ms)),
      el("div", { class: "muted" }, when(r.start_time))];
    const runs = state.history.get(j.name);
    if (runs) strip = runs.length ? runChart(runs.slice(0, 20), 120, 24, `last ${Math.min(20, runs.length)} runs of ${j.name}`) : el("span", { class: "muted" }, "no runs");
    else { strip = el("span", { class: "muted", dataset: { strip: j.name } }, "…"); stripObserver.observe(strip); }
  } else {
    last = [`restarts ${j.restarts}`, j.started_at ? el("div", { class: "muted" }, "up since ", when(j.started_at)) : null];
  }
  return el("tr", { dataset: { job: j.name } },
    el("td", {}, link(jobHref(j.type, j.name), j.name, { class: "jobname" }), hasQueue(j) ? queueBadge(state.queues.get(j.name)) : null),
    el("td", { class: "hide-narrow" }, j.type),
    el("td", {}, statusCell(j)),
    el("td", { class: "hide-narrow" }, sched),
    el("td", {}, last),
    el("td", { class: "hide-narrow" }, strip));
}

/**
 * The overview's frame (counts, filters, table) is built once per visit; a live
 * update changes the counts' text and puts rows in place, rebuilding only the rows
 * whose job or history changed. With 500 jobs, rebuilding the whole table on every
 * event made each update cost a full table layout.
 */
function overviewFrame() {
  const f = state.filters;
  const statusSelect = el("select", { id: "f-status", onchange: (e) => { f.status = e.target.value; scheduleRender(); } });
  const frame = {
    jobs: el("b", { id: "count-jobs" }), running: el("b", { id: "count-running", class: "good" }), failing: el("b", { id: "count-failing" }),
    shown: el("span", { class: "muted", id: "f-shown" }),
    statusSelect, statuses: "",
    tbody: el("tbody"),
  };
  frame.root = [el("h2", { class: "sr" }, "Overview"),
    el("div", { class: "counts" },
      el("div", { class: "card count" }, frame.jobs, "jobs"),
      el("div", { class: "card count" }, frame.running, "running"),
      el("div", { class: "card count" }, frame.failing, "failing")),
    el("div", { class: "filters", role: "search" },
      el("label", { for: "f-name", class: "sr" }, "filter by name"),
      el("input", { id: "f-name", type: "search", placeholder: "filter by name", value: f.name,
        oninput: (e) => { f.name = e.target.value; scheduleRender(); } }),
      el("label", { for: "f-type", class: "sr" }, "type"),
      select("f-type", ["", "continuous", "triggered"], f.type, (v) => { f.type = v; scheduleRender(); }, "all types"),
      el("label", { for: "f-status", class: "sr" }, "status"), statusSelect, frame.shown),
    el("div", { class: "table-wrap" }, el("table", { id: "jobs" },
      el("colgroup", {}, el("col", { class: "c-name" }), el("col", { class: "c-type hide-narrow" }), el("col", { class: "c-status" }),
        el("col", { class: "c-sched hide-narrow" }), el("col", { class: "c-last" }), el("col", { class: "c-strip hide-narrow" })),
      el("thead", {}, el("tr", {}, el("th", {}, "Job"), el("th", { class: "hide-narrow" }, "Type"), el("th", {}, "Status"),
        el("th", { class: "hide-narrow" }, "Schedule / next"), el("th", {}, "Last run"), el("th", { class: "hide-narrow" }, "Last 20 runs"))),
      frame.tbody)),
    deployBox()];
  $("app").replaceChildren(...frame.root);
  return frame;
}

function renderOverview() {
  const frame = view.frame || (view.frame = overviewFrame());
  const jobs = [...state.jobs.values()].sort((a, b) => a.name.localeCompare(b.name) || a.type.localeCompare(b.type));
  const f = state.filters;
  const shown = jobs.filter((j) => (!f.type || j.type === f.type)
    && (!f.status || statusOf(j) === f.status)
    && (!f.name || j.name.toLowerCase().includes(f.name.toLowerCase())));
  const bad = jobs.filter(failing).length;
  frame.jobs.textContent = jobs.length;
  frame.running.textContent = jobs.filter((j) => statusOf(j) === "Running").length;
  frame.failing.textContent = bad;
  frame.failing.className = bad ? "bad" : "";
  frame.shown.textContent = `${shown.length} of ${jobs.length} shown`;
  const statuses = [...new Set(jobs.map(statusOf))].sort();
  if (statuses.join() !== frame.statuses) {
    frame.statuses = statuses.join();
    frame.statusSelect.replaceChildren(...["", ...statuses].map((v) => el("option", { value: v, selected: v === f.status }, v || "all statuses")));
  }
  const rows = shown.map((j) => {
    // A row is rebuilt only when its job or its history changed.
    const cached = rowCache.get(keyOf(j));
    const runsNow = state.history.get(j.name);
    const queueNow = state.queues.get(j.name);
    if (cached && cached.job === j && cached.runs === runsNow && cached.queue === queueNow) return cached.node;
    const node = buildRow(j);
    rowCache.set(keyOf(j), { job: j, runs: runsNow, queue: queueNow, node });
    return node;
  });
  if (!rows.length) {
    rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted" },
      jobs.length ? "No job matches the filters." : "No jobs yet: drop a zip below, or a folder into jobs/continuous/ or jobs/triggered/.")));
  }
  // Put rows in place, touching the DOM only where the order or a row changed.
  const tb = frame.tbody;
  rows.forEach((node, i) => { if (tb.children[i] !== node) tb.insertBefore(node, tb.children[i] || null); });
  while (tb.children.length > rows.length) tb.lastChild.remove();
}

function select(id, values, current, onchange, allLabel) {
  return el("select", { id, onchange: (e) => onchange(e.target.value) },
    values.map((v) => el("option", { value: v, selected: v === current }, v || allLabel)));
}

/** Re-rendering replaces nodes: keep the focused control (by id) and its caret. */
function keepFocus(fn) {
  const a = document.activeElement;
  const id = a && a.id;
  const sel = a && "selectionStart" in a ? [a.selectionStart, a.selectionEnd] : null;
  fn();
  if (id && $(id) && $(id) !== a) {
    $(id).focus();
    try { if (sel) $(id).setSelectionRange(sel[0], sel[1]); } catch (_) { /* not a text field */ }
  }
}

// ----- deploy ---------------------------------------------------------------------

// One deploy box for the page's life: live re-renders must not reset its choices.
let deployNode = null;
function deployBox() {
  if (deployNode) return deployNode;
  const box = deployNode = el("section", { class: "drop", id: "drop", "aria-label": "deploy a job" },
    el("h3", {}, "Deploy"),
    el("div", {}, "Drop a zip (or a single script) here to create or update a job."),
    el("div", { class: "row" },
      el("label", { for: "d-type" }, "as"),
      select("d-type", ["triggered", "continuous"], "triggered", () => {}, ""),
      el("label", { for: "d-name" }, "named"),
      el("input", { id: "d-name", placeholder: "from the file name", pattern: "[A-Za-z0-9][A-Za-z0-9._-]{0,63}" }),
      el("label", { for: "d-file", class: "sr" }, "file to deploy"),
      el("input", { id: "d-file", type: "file", onchange: (e) => { if (e.target.files[0]) deploy(e.target.files[0]); } })),
    el("div", { id: "d-result", class: "muted", "aria-live": "polite" }));
  box.addEventListener("dragover", (e) => { e.preventDefault(); box.classList.add("over"); });
  box.addEventListener("dragleave", () => box.classList.remove("over"));
  box.addEventListener("drop", (e) => {
    e.preventDefault();
    box.classList.remove("over");
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) deploy(f);
  });
  return box;
}

async function deploy(file) {
  const type = $("d-type").value;
  const isZip = /\.zip$/i.test(file.name) || file.type === "application/zip";
  const name = $("d-name").value.trim() || file.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9._-]/g, "-");
  $("d-result").textContent = `deploying ${file.name} as ${type} job ${name}…`;
  const headers = isZip ? { "Content-Type": "application/zip" }
    : { "Content-Type": "application/octet-stream", "Content-Disposition": `attachment; filename*=UTF-8''${encodeURIComponent(file.name)}` };
  const job = await act(`deploying ${file.name}`, () => api("PUT", `/api/${type}webjobs/${encodeURIComponent(name)}`, { headers, body: file }));
  if (job) {
    $("d-result").replaceChildren("deployed: ", link(jobHref(job.type, job.name), job.name, { id: "d-link" }));
    state.jobs.set(keyOf(job), job);
    scheduleRender();
  } else $("d-result").textContent = "";
}

// ----- the log viewer -------------------------------------------------------------

/**
 * A virtual list of log lines: only the visible rows are in the DOM, so 100,000
 * lines cost an array of strings, not 100,000 elements.
 */
class LogView {
  constructor(title, fileName) {
    this.lines = [];
    this.partial = "";
    this.paused = false;
    this.filter = "";
    this.shown = null; // indexes when filtered
    this.follow = true;
    this.fileName = fileName;
    this.box = el("div", { class: "log", id: "log", tabindex: 0, role: "log", "aria-label": title });
    this.spacer = el("div");
    this.rows = el("div", { class: "rows" });
    this.box.append(this.spacer, this.rows);
    this.box.addEventListener("scroll", () => {
      this.follow = this.box.scrollTop + this.box.clientHeight >= this.box.scrollHeight - 24;
      this.draw();
    });
    this.count = el("span", { class: "muted", id: "log-count" });
    this.pauseBtn = el("button", { type: "button", id: "log-pause", onclick: () => this.togglePause() }, "pause");
    this.bar = el("div", { class: "logbar" },
      el("label", { for: "log-search", class: "sr" }, "search the log"),
      el("input", { id: "log-search", type: "search", placeholder: "search", oninput: (e) => this.search(e.target.value) }),
      this.pauseBtn,
      el("button", { type: "button", id: "log-end", onclick: () => this.toEnd() }, "jump to end"),
      el("button", { type: "button", id: "log-download", onclick: () => this.download() }, "download"),
      this.count);
    this.node = el("div", {}, this.bar, this.box);
    this.draw();
  }
  /** Text as read (whole lines from the server; a partial tail waits for the rest). */
  add(text) {
    const parts = (this.partial + text).split("\n");
    this.partial = parts.pop();
    const start = this.lines.length;
    for (const p of parts) this.lines.push(p);
    if (this.shown) for (let i = start; i < this.lines.length; i++) if (this.match(this.lines[i])) this.shown.push(i);
    if (!this.paused) this.draw();
  }
  /** Lines from SSE data (each event holds whole lines). */
  addLines(text) { this.add(text.endsWith("\n") ? text : text + "\n"); }
  match(line) { return line.toLowerCase().includes(this.filter); }
  search(q) {
    this.filter = q.toLowerCase();
    this.shown = q ? this.lines.reduce((a, l, i) => (this.match(l) && a.push(i), a), []) : null;
    this.draw();
  }
  togglePause() {
    this.paused = !this.paused;
    this.pauseBtn.textContent = this.paused ? "resume" : "pause";
    this.pauseBtn.setAttribute("aria-pressed", String(this.paused));
    if (!this.paused) this.draw();
  }
  toEnd() { this.follow = true; if (this.paused) this.togglePause(); this.draw(); }
  download() {
    const blob = new Blob([this.lines.join("\n") + (this.lines.length ? "\n" : "")], { type: "text/plain" });
    const a = el("a", { href: URL.createObjectURL(blob), download: this.fileName });
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }
  draw() {
    const LH = 18;
    const n = this.shown ? this.shown.length : this.lines.length;
    this.spacer.style.height = `${n * LH}px`;
    if (this.follow && !this.paused) this.box.scrollTop = this.box.scrollHeight;
    const first = Math.max(0, Math.floor(this.box.scrollTop / LH) - 20);
    const last = Math.min(n, first + Math.ceil((this.box.clientHeight || 600) / LH) + 40);
    this.rows.style.top = `${first * LH}px`;
    const out = [];
    for (let k = first; k < last; k++) {
      const line = this.lines[this.shown ? this.shown[k] : k];
      let cls = "ln";
      if (/: SYS (INFO|ERROR|WARN)/.test(line)) cls += " sys";
      if (/ ERROR\]/.test(line)) cls += " err";
      if (this.shown) cls += " hit";
      out.push(el("div", { class: cls }, line));
    }
    this.rows.replaceChildren(...out);
    this.count.textContent = this.shown ? `${n} of ${this.lines.length} lines match` : `${this.lines.length} lines${this.paused ? " (paused)" : ""}`;
  }
}

/** Follows a log URL as SSE into a LogView; returns the stop function. */
function followLog(path, logView, onEnd) {
  return sse(path, (_type, data) => logView.addLines(data), { once: !!onEnd, onEnd,
    onError: (e) => showError(`log: ${e.message}`) });
}

// ----- a queue job's messages -----------------------------------------------------

const MESSAGE_STATES = ["Queued", "Running", "Succeeded", "Dead", "Cancelled"];
const MESSAGES_PAGE = 20;
/** What the viewer shows of a payload or result; the download has all of it. */
const VIEW_MAX_CHARS = 256 * 1024;

/** How long a message has waited, from whole seconds ("40 s", "4.0 min"). */
function waited(s) {
  if (s === null || s === undefined) return "-";
  return s < 60 ? `${s} s` : duration(s * 1000);
}
function bytes(n) {
  if (n === null || n === undefined) return "-";
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}

/**
 * The "Queue" section of a queue job's page, built once per visit so live updates
 * never reset the enqueue form or the reader's page: counts, the dead-letter actions,
 * a paged list of messages (newest first, by state), a viewer of payloads and results,
 * and a form to enqueue one. `message` events re-read the page shown, at most every
 * QUEUE_REFRESH_MS.
 */
function queueSection(name) {
  const base = `/api/triggeredwebjobs/${encodeURIComponent(name)}/messages`;
  let filter = "";
  let cursors = [null]; // the `before` of each page reached: null reads the newest
  let pageIdx = 0;
  let messages = null, more = false, loadError = null;
  let seq = 0, lastLoad = 0, reloadTimer = null, left = false;

  const count = (id, label) => {
    const b = el("b", { id });
    return [el("div", { class: "card count" }, b, label), b];
  };
  const [queuedCard, queuedN] = count("q-queued", "queued");
  const [runningCard, runningN] = count("q-running", "running");
  const [deadCard, deadN] = count("q-dead", "dead");
  const [oldestCard, oldestN] = count("q-oldest", "oldest queued");
  const countsError = el("div", { id: "q-store-error" });
  const result = el("span", { id: "q-result", class: "muted", "aria-live": "polite" });
  const confirmBox = el("div", { id: "q-confirm-box", class: "actions confirm", hidden: true });
  const requeueDead = el("button", { type: "button", id: "q-requeue-dead", onclick: () => ask(
    `Requeue every dead message of ${name}? Each runs again from attempt 1.`, "requeue all dead",
    () => api("POST", `${base}/requeue?state=Dead`)) }, "Requeue all dead");
  const deleteDead = el("button", { type: "button", id: "q-delete-dead", onclick: () => ask(
    `Delete every dead message of ${name}? Their payloads and errors are gone for good.`, "delete all dead",
    () => api("DELETE", `${base}?state=Dead`)) }, "Delete all dead");

  const stateSelect = el("select", { id: "q-state", onchange: (e) => { filter = e.target.value; cursors = [null]; pageIdx = 0; load(); } },
    ["", ...MESSAGE_STATES].map((v) => el("option", { value: v }, v || "All")));
  const tbody = el("tbody");
  const listNote = el("div", { id: "q-list-note" });
  const newer = el("button", { type: "button", id: "q-newer", disabled: true, onclick: () => { pageIdx--; load(); } }, "newer");
  const older = el("button", { type: "button", id: "q-older", disabled: true, onclick: () => { pageIdx++; load(); } }, "older");
  const pageLabel = el("span", { class: "muted", id: "q-page" });

  const viewTitle = el("h4", { id: "q-view-title" });
  const viewText = el("pre", { id: "q-view-text", class: "viewer", tabindex: 0 });
  const viewSave = el("button", { type: "button", id: "q-view-download" }, "download");
  const viewer = el("section", { id: "q-view", class: "card", hidden: true, "aria-labelledby": "q-view-title" },
    viewTitle, viewText, el("div", { class: "actions" }, viewSave,
      el("button", { type: "button", id: "q-view-close", onclick: () => { viewer.hidden = true; } }, "close")));

  const payload = el("textarea", { id: "q-payload", rows: 3, placeholder: "the message's bytes, e.g. {\"id\": 7}" });
  const priority = el("input", { id: "q-priority", placeholder: "0", size: 6, autocomplete: "off" });
  const delay = el("input", { id: "q-delay", placeholder: "0", size: 6, inputmode: "decimal", autocomplete: "off" });
  const form = el("form", { id: "q-enqueue", class: "enqueue", "aria-label": `enqueue a message for ${name}`, onsubmit: (e) => { e.preventDefault(); enqueue(); } },
    el("label", { for: "q-payload" }, "payload"), payload,
    el("div", { class: "row" },
      el("label", { for: "q-priority" }, "priority"), priority,
      el("label", { for: "q-delay" }, "delay (s)"), delay,
      el("button", { type: "submit", id: "q-send", class: "primary" }, "enqueue")));

  const node = el("section", { id: "queue", "aria-labelledby": "queue-h" },
    el("h3", { id: "queue-h" }, "Queue"),
    countsError,
    el("div", { class: "counts" }, queuedCard, runningCard, deadCard, oldestCard),
    el("div", { class: "actions" }, requeueDead, deleteDead, result),
    confirmBox,
    el("div", { class: "filters" },
      el("label", { for: "q-state" }, "messages"), stateSelect, pageLabel),
    listNote,
    el("div", { class: "table-wrap" }, el("table", { id: "messages" },
      el("thead", {}, el("tr", {}, el("th", {}, "Message"), el("th", {}, "State"), el("th", { class: "hide-narrow" }, "Attempts"),
        el("th", { class: "hide-narrow" }, "Priority"), el("th", {}, "Enqueued"), el("th", {}, "Last error"),
        el("th", { class: "hide-narrow" }, "Runs"), el("th", {}, "Data"), el("th", {}, el("span", { class: "sr" }, "Actions")))),
      tbody)),
    el("div", { class: "pager" }, newer, older),
    viewer,
    el("h4", {}, "Enqueue"), form);

  function setCounts(q) {
    const known = q && !q.error;
    queuedN.textContent = known ? q.queued : "-";
    runningN.textContent = known ? q.running : "-";
    deadN.textContent = known ? q.dead : "-";
    deadN.className = known && q.dead ? "bad" : "";
    oldestN.textContent = known ? waited(q.oldest_queued_age_s) : "-";
    countsError.replaceChildren(q && q.error ? el("div", { class: "error-box" }, q.error) : "");
    // Enabled while counts are unknown: a refusal then says why.
    const noDead = known && q.dead === 0;
    requeueDead.disabled = noDead;
    deleteDead.disabled = noDead;
  }

  /** A confirm step in the page (a dialog would block the page and the live view). */
  function ask(question, verb, call, done) {
    clearError();
    const yes = el("button", { type: "button", id: "q-confirm", class: "primary", onclick: async () => {
      close();
      const r = await act(verb, call);
      if (r) result.textContent = done || r.message;
      afterChange();
    } }, `Yes, ${verb}`);
    const no = el("button", { type: "button", id: "q-confirm-cancel", onclick: () => close() }, "Not now");
    const close = () => { confirmBox.hidden = true; confirmBox.replaceChildren(); };
    confirmBox.replaceChildren(el("span", { id: "q-question" }, question), yes, no);
    confirmBox.onkeydown = (e) => { if (e.key === "Escape") close(); };
    confirmBox.hidden = false;
    // The safe answer has the focus: Enter pressed once more changes nothing.
    no.focus();
  }

  /** Counts and list again now: some changes (a purge) send no `message` event. */
  function afterChange() {
    refreshQueue(name);
    load();
  }

  async function load() {
    const n = ++seq;
    lastLoad = Date.now();
    const q = new URLSearchParams({ limit: String(MESSAGES_PAGE) });
    if (filter) q.set("state", filter);
    if (cursors[pageIdx]) q.set("before", cursors[pageIdx]);
    try {
      const r = await api("GET", `${base}?${q}`);
      if (n !== seq || left) return;
      messages = r.messages || [];
      more = !!r.next_url && messages.length > 0;
      loadError = null;
      // An emptied page (its messages deleted) falls back to the newest.
      if (!messages.length && pageIdx > 0) { cursors = [null]; pageIdx = 0; load(); return; }
      cursors[pageIdx + 1] = more ? messages[messages.length - 1].id : undefined;
    } catch (e) {
      if (n !== seq || left) return;
      loadError = e.message;
    }
    draw();
  }

  /** Reads the page shown again, at most every QUEUE_REFRESH_MS. */
  function reloadSoon() {
    if (reloadTimer) return;
    reloadTimer = setTimeout(() => { reloadTimer = null; if (!left) load(); },
      Math.max(0, lastLoad + QUEUE_REFRESH_MS - Date.now()));
  }

  function runLinks(m) {
    if (!m.runs || !m.runs.length) return el("span", { class: "muted" }, "none");
    const shown = m.runs.slice(-5);
    const skipped = m.runs.length - shown.length;
    return [skipped ? el("span", { class: "muted" }, `${skipped} earlier, `) : null,
      shown.flatMap((id, i) => [i ? " " : null,
        link(runHref(name, id), `#${skipped + i + 1}`, { class: "q-run", title: `run ${id}`, "aria-label": `run ${skipped + i + 1} of message ${m.id}: ${id}` })])];
  }

  function row(m) {
    const meta = [m.name ? el("div", { class: "muted" }, "name: ", m.name) : null,
      m.correlation_id ? el("div", { class: "muted" }, "correlation: ", m.correlation_id) : null];
    let wait = null;
    const due = m.next_attempt_at || m.not_before;
    if (m.state === "Queued" && due && Date.parse(due) > Date.now()) {
      wait = el("div", { class: "muted" }, m.attempts ? "retry " : "not before ", when(due, "clock"));
    }
    const actions = [];
    if (["Dead", "Succeeded", "Cancelled"].includes(m.state)) {
      actions.push(el("button", { type: "button", class: "q-requeue", id: `q-requeue-${m.id}`, "aria-label": `requeue message ${m.id}`,
        onclick: async () => {
          const r = await act(`requeue ${m.id}`, () => api("POST", `${base}/${encodeURIComponent(m.id)}/requeue`));
          if (r) result.textContent = `message ${m.id} requeued`;
          afterChange();
        } }, "Requeue"));
    } else {
      actions.push(el("button", { type: "button", class: "q-cancel", id: `q-cancel-${m.id}`, "aria-label": `cancel message ${m.id}`,
        onclick: () => ask(m.state === "Running" ? `Cancel message ${m.id}? Its run is stopped.` : `Cancel message ${m.id}? It will not run.`,
          `cancel ${m.id}`, () => api("DELETE", `${base}/${encodeURIComponent(m.id)}`), `message ${m.id} cancelled`) }, "Cancel"));
    }
    const data = [el("button", { type: "button", class: "linkish q-payload", "aria-label": `payload of message ${m.id}`,
      onclick: () => show(m, "payload") }, `payload (${bytes(m.payload_bytes)})`)];
    if (m.result_bytes !== null && m.result_bytes !== undefined) {
      data.push(el("br"), el("button", { type: "button", class: "linkish q-result", "aria-label": `result of message ${m.id}`,
        onclick: () => show(m, "result") }, `result (${bytes(m.result_bytes)})`));
    }
    return el("tr", { dataset: { id: m.id, state: m.state } },
      el("td", {}, el("code", { class: "mono" }, m.id), meta),
      el("td", {}, el("span", { class: `st ${tone(m.state)}` }, m.state), wait),
      el("td", { class: "num hide-narrow" }, m.attempts),
      el("td", { class: "num hide-narrow" }, m.priority),
      el("td", {}, when(m.enqueued_at, "clock")),
      el("td", { class: m.state === "Dead" ? "q-error bad" : "q-error" }, m.last_error || el("span", { class: "muted" }, "-")),
      el("td", { class: "hide-narrow" }, runLinks(m)),
      el("td", {}, data),
      el("td", {}, actions));
  }

  function draw() {
    const rows = (messages || []).map(row);
    keepFocus(() => tbody.replaceChildren(...rows));
    const what = filter ? `${filter} messages` : "messages";
    listNote.replaceChildren(loadError ? el("div", { class: "error-box", id: "q-list-error" }, `reading the ${what}: ${loadError}`)
      : messages === null ? el("p", { class: "muted" }, "loading…")
        : !messages.length ? el("p", { class: "muted", id: "q-empty" }, `No ${what}.`) : "");
    newer.disabled = pageIdx === 0;
    older.disabled = !more;
    pageLabel.textContent = messages ? `page ${pageIdx + 1}, ${messages.length} shown, newest first` : "";
  }

  /** Fetches a payload or result (they need the token) and shows it as text. */
  async function show(m, what) {
    const r = await act(`reading the ${what} of ${m.id}`, () => api("GET", `${base}/${encodeURIComponent(m.id)}/${what}`, { raw: true }));
    if (!r) return;
    const buf = await r.arrayBuffer();
    let text = null;
    try { text = new TextDecoder("utf-8", { fatal: true }).decode(buf); } catch (_) { /* not text */ }
    const type = what === "payload" ? m.content_type || "no content type" : "";
    viewTitle.textContent = `${what === "payload" ? "Payload" : "Result"} of message ${m.id} (${[type, bytes(buf.byteLength)].filter(Boolean).join(", ")})`;
    viewText.textContent = text === null ? `${bytes(buf.byteLength)} of binary data: download it to read it.`
      : text.length > VIEW_MAX_CHARS ? `${text.slice(0, VIEW_MAX_CHARS)}\n… (the first ${VIEW_MAX_CHARS} characters; download it for all)` : text || "(empty)";
    // Saved as opaque bytes: a payload that claims to be HTML is never opened as a page here.
    viewSave.onclick = () => {
      const a = el("a", { href: URL.createObjectURL(new Blob([buf], { type: "application/octet-stream" })), download: `${name}-${m.id}.${what}` });
      document.body.append(a);
      a.click();
      setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    };
    viewer.hidden = false;
    viewText.focus();
  }

  async function enqueue() {
    const q = new URLSearchParams();
    if (priority.value.trim()) q.set("priority", priority.value.trim());
    if (delay.value.trim()) q.set("delay", delay.value.trim());
    const body = payload.value;
    let json = false;
    try { JSON.parse(body); json = true; } catch (_) { /* text */ }
    const qs = q.toString();
    const r = await act("enqueue", () => api("POST", `${base}${qs ? "?" + qs : ""}`,
      { body, headers: { "Content-Type": json ? "application/json" : "text/plain; charset=utf-8" } }));
    if (!r) return;
    result.textContent = `message ${r.id} enqueued (${r.state})`;
    payload.value = "";
    afterChange();
  }

  setCounts(state.queues.get(name));
  refreshQueue(name);
  load();
  draw();
  return {
    node,
    setCounts,
    onMessage: (d) => { if (d.job === name) reloadSoon(); },
    leave: () => { left = true; if (reloadTimer) clearTimeout(reloadTimer); },
  };
}

// ----- a job's page ---------------------------------------------------------------

function jobPage(type, name) {
  const key = `${type}/${name}`;
  let page = 0;
  let logStop = null, logFor = null, logView = null, queue = null;
  const PAGE = 20;
  function startLog(j) {
    // Continuous: the job log. Triggered: the run going, else the latest run.
    const target = type === "continuous" ? "job" : (j && (j.running || (j.latest_run && j.latest_run.id))) || null;
    if (target === logFor) return;
    if (logStop) logStop();
    logFor = target;
    logView = new LogView(`log of ${name}`, `${name}${target && target !== "job" ? "-" + target : ""}.log`);
    if (type === "continuous") logStop = followLog(`/api/continuouswebjobs/${encodeURIComponent(name)}/log?follow=1&tail=1000&format=sse`, logView);
    else if (target) logStop = followLog(`/api/triggeredwebjobs/${encodeURIComponent(name)}/history/${target}/output?follow=1&format=sse`, logView, () => {});
    else logStop = null;
  }
  async function runIt() {
    const args = $("run-args").value;
    const q = args.trim() ? `?arguments=${encodeURIComponent(args)}` : "";
    const r = await act("run", () => api("POST", `/api/triggeredwebjobs/${encodeURIComponent(name)}/run${q}`));
    if (r) $("act-result").textContent = r.id ? `run ${r.id} started` : `queued behind ${r.queued_behind}`;
  }
  let shownJob = null, shownRuns = null;
  function render(force) {
    const j = state.jobs.get(key);
    // Another job's event changes nothing here: keep the page (and the reader's place).
    if (!force && j && j === shownJob && state.history.get(name) === shownRuns) return;
    shownJob = j;
    shownRuns = state.history.get(name);
    if (!j) {
      $("app").replaceChildren(el("p", {}, link("#/", "← all jobs")),
        el("p", {}, state.jobs.size ? `No ${type} job named ${name}.` : "loading…"));
      return;
    }
    startLog(j);
    const st = statusOf(j);
    const actions = el("div", { class: "actions" });
    if (type === "continuous") {
      actions.append(j.disabled
        ? el("button", { type: "button", id: "act-start", class: "primary", onclick: () => act("start", () => api("POST", `/api/continuouswebjobs/${encodeURIComponent(name)}/start`)) }, "start")
        : el("button", { type: "button", id: "act-stop", onclick: () => act("stop", () => api("POST", `/api/continuouswebjobs/${encodeURIComponent(name)}/stop`)) }, "stop"));
    } else if (j.running) {
      actions.append(el("button", { type: "button", id: "act-cancel", onclick: () => act("cancel", () => api("POST", `/api/triggeredwebjobs/${encodeURIComponent(name)}/history/${j.running}/cancel`)) }, "cancel run"),
        link(runHref(name, j.running), "the run going"));
    } else if (st === "Error") {
      actions.append(el("span", { class: "bad" }, "cannot run: fix the error above"));
    } else {
      const prev = $("run-args") ? $("run-args").value : "";
      actions.append(el("label", { for: "run-args" }, "arguments"),
        el("input", { id: "run-args", placeholder: "e.g. --day 2026-12-01 \"two words\"", value: prev, size: 32,
          onkeydown: (e) => { if (e.key === "Enter") runIt(); } }),
        el("button", { type: "button", id: "act-run", class: "primary", onclick: runIt }, "run"));
    }
    actions.append(el("span", { id: "act-result", class: "muted", "aria-live": "polite" }, $("act-result") ? $("act-result").textContent : ""));

    const record = el("dl", { class: "record" },
      el("dt", {}, "status"), el("dd", {}, statusCell(j)),
      el("dt", {}, "type"), el("dd", {}, j.type),
      el("dt", {}, "command"), el("dd", {}, el("code", {}, j.run_command || "-")),
      type === "triggered" ? [el("dt", {}, "schedule"), el("dd", {}, j.schedule ? [el("code", {}, j.schedule), ` (${j.timezone || "UTC"}), next `, j.next_fire ? when(j.next_fire, "clock") : "-"] : "on demand")] : null,
      type === "continuous" ? [el("dt", {}, "pid"), el("dd", {}, j.pid ?? "-"), el("dt", {}, "restarts"), el("dd", {}, j.restarts),
        el("dt", {}, "started"), el("dd", {}, when(j.started_at))] : null);
    const errors = j.error ? el("div", { class: "error-box", id: "job-error" }, j.error) : null;
    const warnings = (j.warnings || []).map((w) => el("div", { class: "muted" }, "warning: ", w));

    const parts = [el("p", {}, link("#/", "← all jobs")), el("h2", {}, j.name), errors, el("div", { class: "card" }, record), actions,
      el("h3", {}, "Settings"), settingsTable(j), warnings];
    if (type === "triggered" && hasQueue(j)) {
      if (!queue) queue = queueSection(name);
      parts.push(queue.node);
    } else if (queue) { queue.leave(); queue = null; }
    if (type === "triggered") {
      const runs = state.history.get(name);
      if (!runs) loadHistory(name);
      parts.push(el("h3", {}, "Runs"));
      if (runs && runs.length) {
        const pages = Math.ceil(runs.length / PAGE);
        page = Math.min(page, pages - 1);
        const slice = runs.slice(page * PAGE, page * PAGE + PAGE);
        parts.push(runChart(runs, 600, 48, `durations of the last ${Math.min(60, runs.length)} runs`, 60),
          el("div", { class: "table-wrap" }, el("table", { id: "runs" },
            el("thead", {}, el("tr", {}, el("th", {}, "Run"), el("th", {}, "Outcome"), el("th", {}, "Started"), el("th", {}, "Duration"), el("th", { class: "hide-narrow" }, "Trigger"))),
            el("tbody", {}, slice.map((r) => el("tr", {},
              el("td", {}, link(runHref(name, r.id), r.id, { class: "mono" })),
              el("td", {}, el("span", { class: `st ${tone(r.status)}` }, r.status), r.exit_code !== null && r.exit_code !== undefined && r.exit_code !== 0 ? el("span", { class: "muted" }, ` exit ${r.exit_code}`) : null),
              el("td", {}, when(r.start_time)),
              el("td", { class: "num" }, duration(r.duration_ms)),
              el("td", { class: "hide-narrow" }, r.trigger)))))),
          el("div", { class: "pager" },
            el("button", { type: "button", id: "runs-prev", disabled: page === 0, onclick: () => { page--; render(true); } }, "newer"),
            el("span", { class: "muted" }, `page ${page + 1} of ${pages} (${runs.length} runs)`),
            el("button", { type: "button", id: "runs-next", disabled: page >= pages - 1, onclick: () => { page++; render(true); } }, "older")));
      } else parts.push(el("p", { class: "muted" }, runs ? "No runs yet." : "loading…"));
    }
    parts.push(el("h3", {}, type === "continuous" ? "Log (live)" : logFor ? `Output of run ${logFor}` : "Output"),
      logView ? logView.node : el("p", { class: "muted" }, "No run yet."));
    keepFocus(() => {
      const scroll = logView ? logView.box.scrollTop : 0;
      $("app").replaceChildren(...parts.flat().filter(Boolean));
      if (logView) { logView.box.scrollTop = scroll; logView.draw(); }
    });
  }
  return {
    render,
    onRun: (d) => { if (d.job === name) loadHistory(name); },
    onQueue: (n) => { if (n === name && queue) queue.setCounts(state.queues.get(name)); },
    onMessage: (d) => { if (queue) queue.onMessage(d); },
    leave: () => { if (logStop) logStop(); if (queue) queue.leave(); },
  };
}

function settingsTable(j) {
  const settings = j.settings && typeof j.settings === "object" ? j.settings : {};
  const problems = Array.isArray(j.problems) ? j.problems : [];
  const keys = Object.keys(settings);
  const atKey = (k) => problems.filter((p) => p.key === k);
  const other = problems.filter((p) => !p.key || !keys.includes(p.key));
  const problemLine = (p) => el("div", { class: "problem" },
    p.line ? `${p.file || "settings.job"}:${p.line}${p.column ? ":" + p.column : ""}: ` : "", p.message, p.fix ? ` (fix: ${p.fix})` : "");
  if (!keys.length && !other.length) return el("p", { class: "muted" }, "No settings.job: every key has its default.");
  return el("div", { class: "table-wrap" }, el("table", { id: "settings" },
    el("thead", {}, el("tr", {}, el("th", {}, "Key"), el("th", {}, "Value"))),
    el("tbody", {}, keys.map((k) => el("tr", { dataset: { key: k } },
      el("td", {}, el("code", {}, k)),
      el("td", {}, el("code", {}, JSON.stringify(settings[k])), atKey(k).map(problemLine)))),
    other.length ? el("tr", {}, el("td", {}, el("span", { class: "muted" }, "file")), el("td", {}, other.map(problemLine))) : null)));
}

// ----- a run's page ---------------------------------------------------------------

function runPage(name, id) {
  let run = null, logView = null, logStop = null, failed = null;
  async function load() {
    try {
      run = await api("GET", `/api/triggeredwebjobs/${encodeURIComponent(name)}/history/${encodeURIComponent(id)}`);
    } catch (e) { failed = e.message; render(); return; }
    if (!logView) {
      logView = new LogView(`output of run ${id}`, `${name}-${id}.log`);
      logStop = followLog(`/api/triggeredwebjobs/${encodeURIComponent(name)}/history/${encodeURIComponent(id)}/output?follow=1&format=sse`,
        logView, () => load());
    }
    render();
  }
  function render() {
    const head = [el("p", {}, link("#/", "← all jobs"), " · ", link(jobHref("triggered", name), name))];
    if (failed) { $("app").replaceChildren(...head, el("div", { class: "error-box" }, failed)); return; }
    if (!run) { $("app").replaceChildren(...head, el("p", {}, "loading…")); return; }
    const ended = run.exit_code !== null && run.exit_code !== undefined ? `exit code ${run.exit_code}`
      : run.signal ? `killed by signal ${run.signal}` : run.status === "Running" ? "running" : "-";
    const args = run.arguments && run.arguments.length ? run.arguments.map((a) => el("code", { class: "arg" }, a)).flatMap((a) => [a, " "]) : el("span", { class: "muted" }, "none");
    const record = el("dl", { class: "record", id: "run-record" },
      el("dt", {}, "outcome"), el("dd", {}, el("span", { class: `st ${tone(run.status)}`, id: "run-status" }, run.status)),
      el("dt", {}, "ended with"), el("dd", { id: "run-exit" }, ended),
      el("dt", {}, "duration"), el("dd", {}, duration(run.duration_ms)),
      el("dt", {}, "started"), el("dd", {}, when(run.start_time, true), " (", when(run.start_time), ")"),
      el("dt", {}, "ended"), el("dd", {}, when(run.end_time, true)),
      el("dt", {}, "trigger"), el("dd", {}, run.trigger, run.scheduled_for ? [" for ", when(run.scheduled_for, true)] : null),
      el("dt", {}, "arguments"), el("dd", { id: "run-args" }, args));
    $("app").replaceChildren(...head, el("h2", {}, `Run ${run.id}`),
      run.error ? el("div", { class: "error-box", id: "run-error" }, run.error) : null,
      el("div", { class: "card" }, record), el("h3", {}, "Output"), logView.node);
    logView.draw();
  }
  load();
  // Events about jobs do not change a run's record; its own follow does (load()).
  return { render: (force) => { if (force) render(); }, leave: () => { if (logStop) logStop(); } };
}

// ----- login, routing, start -------------------------------------------------------

function loginPage(message) {
  const input = el("input", { id: "token", type: "password", autocomplete: "off", required: true });
  const form = el("form", { class: "card login", id: "login", onsubmit: async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try {
      await api("GET", "/api/health");
      await api("GET", "/api/webjobs");
      clearError();
      start();
    } catch (err) { if (err.status !== 401) showError(err.message); }
  } },
  el("h2", {}, "Log in"),
  el("p", { class: "muted" }, "The token is in LOGS/.jobhost-token on the host (or JOBHOST_TOKEN). It is kept for this tab only."),
  message ? el("p", { class: "bad", id: "login-message" }, message) : null,
  el("label", { for: "token" }, "token"), input,
  el("button", { type: "submit", class: "primary" }, "log in"));
  $("app").replaceChildren(form);
  $("logout").hidden = true;
  input.focus();
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.stopEvents) { state.stopEvents(); state.stopEvents = null; }
  if (view.leave) view.leave();
  view = { render: () => {} };
  $("live").textContent = "";
  loginPage(message);
}

function route() {
  if (!token()) { loginPage(); return; }
  if (view.leave) view.leave();
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  clearError();
  if (parts[0] === "jobs" && parts.length >= 3) view = jobPage(parts[1], parts[2]);
  else if (parts[0] === "runs" && parts.length >= 3) view = runPage(parts[1], parts[2]);
  else view = { render: renderOverview, frame: null };
  document.title = parts[0] === "jobs" ? `${parts[2]} · jobhost` : parts[0] === "runs" ? `run ${parts[2]} · jobhost` : "jobhost";
  view.render(true);
  window.scrollTo(0, 0);
}

async function start() {
  $("logout").hidden = false;
  startEvents();
  route();
  try {
    const h = await api("GET", "/api/health");
    $("meta").textContent = `v${h.version}` + (h.instance ? ` · ${h.instance}` : "");
  } catch (_) { /* shown by the events line */ }
}

function applyTheme() {
  const t = localStorage.getItem(THEME_KEY);
  if (t) document.documentElement.dataset.theme = t; else delete document.documentElement.dataset.theme;
  $("theme").textContent = t === "dark" ? "light mode" : t === "light" ? "dark mode" : "theme: system";
}
$("theme").addEventListener("click", () => {
  const dark = document.documentElement.dataset.theme === "dark"
    || (!document.documentElement.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
  localStorage.setItem(THEME_KEY, dark ? "light" : "dark");
  applyTheme();
});
$("logout").addEventListener("click", () => logout("Logged out."));
window.addEventListener("hashchange", () => { if (token()) route(); });
// Relative times age: redraw them every 30 s (the data itself comes from events).
setInterval(() => { if (token()) { rowCache.clear(); scheduleRender(true); } }, 30000);
applyTheme();
if (token()) start(); else loginPage();
