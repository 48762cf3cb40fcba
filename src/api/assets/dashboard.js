// The dashboard's script, served at /dashboard.js so the page's Content-Security-Policy
// can allow scripts from this server only (no inline script, no inline handlers:
// buttons carry data-* attributes and one listener acts on them).
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
async function api(method, path) {
  // location.origin never carries user:password@, which fetch() refuses.
  const r = await fetch(location.origin + path, { method, credentials: "same-origin" });
  const text = await r.text();
  if (!r.ok) { let m = text; try { m = JSON.parse(text).message; } catch (_) {} throw new Error(m); }
  return text;
}
// An error stays until the user dismisses it or starts another action. Only an error
// of the periodic refresh (host unreachable) clears itself, when a refresh succeeds
// again: the refresh never wipes the answer to something the user did.
let errFromRefresh = false;
function showError(message, fromRefresh) {
  if (fromRefresh && !$("err").hidden && !errFromRefresh) return;
  $("errtext").textContent = message;
  $("err").hidden = false;
  errFromRefresh = fromRefresh;
}
function clearError() {
  $("errtext").textContent = "";
  $("err").hidden = true;
  errFromRefresh = false;
}
function statusOf(j) {
  if (j.type === "continuous") return j.status;
  if (j.error) return "Error";
  if (j.running) return "Running";
  return j.disabled ? "Disabled" : "Ready";
}
const button = (label, attrs) => `<button type="button" ${attrs}>${label}</button>`;
const action = (method, path) => `data-method="${method}" data-path="${esc(path)}"`;
const logView = (title, path) => `data-title="${esc(title)}" data-log="${esc(path)}"`;
function row(j) {
  const st = statusOf(j);
  const name = encodeURIComponent(j.name);
  let sched = "-", last = "-", actions = "";
  if (j.type === "continuous") {
    last = `restarts ${esc(j.restarts)}` + (j.pid ? `, pid ${esc(j.pid)}` : "");
    actions = j.disabled
      ? button("start", action("POST", `/api/continuouswebjobs/${name}/start`))
      : button("stop", action("POST", `/api/continuouswebjobs/${name}/stop`));
    actions += button("log", logView(j.name, `/api/continuouswebjobs/${name}/log?tail=200`));
  } else {
    if (j.schedule) {
      sched = `${esc(j.schedule)} <span class="muted">${esc(j.timezone)}</span><br><span class="muted">${esc(j.next_fire ?? "")}</span>`;
    } else {
      // Without valid settings the schedule is unknown, not "on demand".
      sched = st === "Error" ? `<span class="muted">unknown: settings have errors</span>` : "on demand";
    }
    const r = j.latest_run;
    if (r) last = `<span class="st ${esc(r.status)}">${esc(r.status)}</span> <span class="muted">${esc(r.start_time)}</span>`;
    if (j.running) {
      actions = button("cancel", action("POST", `/api/triggeredwebjobs/${name}/history/${encodeURIComponent(j.running)}/cancel`));
    } else if (st === "Error") {
      // A job in Error cannot run until its folder is fixed: no button, and why.
      actions = `<span class="muted Error">cannot run: fix the error shown under its name</span><br>`;
    } else {
      actions = button("run", action("POST", `/api/triggeredwebjobs/${name}/run`));
    }
    if (r) actions += button("output", logView(`${j.name} ${r.id}`, `/api/triggeredwebjobs/${name}/history/${encodeURIComponent(r.id)}/output`));
  }
  const why = j.type === "continuous" ? j.detailed_status : "";
  return `<tr><td><b>${esc(j.name)}</b>${j.error ? `<br><span class="muted Error">${esc(j.error)}</span>` : ""}</td>
    <td>${esc(j.type)}</td><td><span class="st ${esc(st)}">${esc(st)}</span><br><span class="muted">${esc(why)}</span></td>
    <td>${sched}</td><td>${last}</td><td>${actions}</td></tr>`;
}
async function refresh() {
  try {
    const jobs = JSON.parse(await api("GET", "/api/webjobs"));
    $("jobs").innerHTML = jobs.map(row).join("") || `<tr><td colspan="6" class="muted">No jobs: drop a folder into jobs/continuous/ or jobs/triggered/.</td></tr>`;
    const h = JSON.parse(await api("GET", "/api/health"));
    $("meta").textContent = `v${h.version} · up ${h.uptime_seconds} s` + (h.instance ? ` · ${h.instance}` : "");
    if (errFromRefresh) clearError();
  } catch (e) { showError(e.message, true); }
}
async function act(method, path) {
  clearError();
  try { await api(method, path); } catch (e) { showError(e.message, false); }
  // The API shows a write on the very next request.
  refresh();
}
async function showLog(title, path) {
  clearError();
  try {
    $("log").textContent = await api("GET", path);
    $("logtitle").textContent = title; $("logtitle").hidden = false; $("log").hidden = false;
    $("log").scrollTop = $("log").scrollHeight;
  } catch (e) { showError(e.message, false); }
}
$("jobs").addEventListener("click", (ev) => {
  const b = ev.target.closest("button");
  if (!b) return;
  if (b.dataset.method) act(b.dataset.method, b.dataset.path);
  else if (b.dataset.log) showLog(b.dataset.title, b.dataset.log);
});
$("errclose").addEventListener("click", clearError);
refresh();
setInterval(refresh, 3000);
