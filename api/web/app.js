// The avgen web page: plain JavaScript over the HTTP API (/v1/...), no framework, nothing fetched from elsewhere.
//
// Two browser facts shape it: EventSource cannot send an Authorization header, and neither can <video src>. So a
// job's events are read with fetch() and a stream reader that parses the Server-Sent Events text (resuming with
// Last-Event-ID), and results (MP4, PNG, zip) are fetched with the header into Blob URLs.
"use strict";

const KEY_STORE = "avgen-api-key";
const TERMINAL = new Set(["succeeded", "failed", "canceled", "expired"]);
const MAX_STREAMS = 3; // event streams open at once (a browser allows ~6 connections per server)
const LIST_LIMIT = 50;
const GENERATE_FIELDS = {
  kind: "string", text: "string", seconds: "number", seed: "integer", steps: "integer", cfg: "number",
  sampler: "string", shift: "number", score: "boolean", reference_image: "string", audio: "string",
};
const EVALUATE_FIELDS = { kind: "string", upload: "string", job: "string", backend: "string", plot: "boolean" };
const METRICS = [ // [key, label, how to read it, digits]
  ["sync_confidence", "Lip-sync confidence", "higher is better", 3],
  ["sync_distance", "Lip-sync distance", "lower is better", 3],
  ["av_offset_frames", "Audio–video offset", "frames; 0 is in sync", 0],
  ["temporal_flickering", "Temporal flickering", "1.0 = no change between frames", 4],
  ["warping_error", "Warping error", "lower is steadier", 5],
  ["audio_flicker", "Audio flicker", "dB per 40 ms hop; lower is smoother", 3],
  ["speech_fraction", "Speech", "fraction of frames with speech", 2],
];

const $ = (selector, root = document) => root.querySelector(selector);
const state = {
  jobs: new Map(), // id -> the job as GET /v1/jobs/{id} shows it
  order: [], // the listed (top-level) jobs, newest first
  followers: new Map(), // id -> AbortController of its event stream
  lastEventId: new Map(), // id -> the last event id seen (resume point)
  selected: null, // the job shown in the viewer
  viewerKey: null, // what the viewer was built for (id:status), so progress alone does not rebuild it
  blobUrls: [], // of the viewer's media; revoked when it shows another job
  pollTimer: null,
  childTimer: null,
};

class ApiError extends Error {
  constructor(status, detail, body = null) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.body = body;
  }
}

// --- the API ---

function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

async function api(path, { method = "GET", json, body, headers = {}, signal, raw = false } = {}) {
  const h = new Headers(headers);
  const key = apiKey();
  if (key) h.set("Authorization", `Bearer ${key}`);
  if (json !== undefined) {
    h.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  }
  let r;
  try {
    r = await fetch(path, { method, headers: h, body, signal, cache: "no-store" });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, `the server cannot be reached (${e.message})`);
  }
  if (!r.ok) throw await problemOf(r);
  return raw ? r : r.json();
}

async function problemOf(r) {
  // Every error of the API is application/problem+json: its `detail` says what went wrong.
  let detail = `${r.status} ${r.statusText}`;
  let body = null;
  try {
    body = await r.json();
    if (body && typeof body.detail === "string") detail = body.detail;
  } catch (_) { /* not JSON: keep the status line */ }
  if (r.status === 401) askForKey(detail);
  return new ApiError(r.status, detail, body);
}

function upload(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  return api("/v1/uploads", { method: "POST", body: form });
}

async function uploadAs(file, kinds, what, status) {
  status(`Uploading the ${what}…`);
  const up = await upload(file);
  if (!kinds.includes(up.kind)) throw new ApiError(422, `${file.name} is ${up.kind}; the ${what} must be ${kinds.join(" or ")}`);
  return up.id;
}

// --- the API key ---

function askForKey(detail) {
  const panel = $("#key-panel");
  const hadKey = Boolean(apiKey());
  panel.hidden = false;
  $("#key-toggle").hidden = false;
  const error = $("#key-error");
  error.hidden = !hadKey;
  error.textContent = hadKey ? detail : "";
  stopAllFollowers();
  if (document.activeElement?.tagName !== "INPUT") $("#api-key").focus();
}

function setupKey() {
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("#api-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    $("#api-key").value = "";
    $("#key-panel").hidden = true;
    $("#key-error").hidden = true;
    $("#queue-error").hidden = true;
    refreshJobs();
  });
  $("#key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    $("#api-key").value = "";
  });
  $("#key-toggle").addEventListener("click", () => {
    const panel = $("#key-panel");
    panel.hidden = !panel.hidden;
    if (!panel.hidden) $("#api-key").focus();
  });
  if (apiKey()) $("#key-toggle").hidden = false;
}

// --- formatting ---

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

function duration(seconds) {
  if (!Number.isFinite(seconds)) return "";
  seconds = Math.max(0, seconds);
  if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function clock(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }) : "";
}

const short = (id) => id.slice(0, 8);
const percent = (f) => `${Math.round((f || 0) * 100)}%`;

function title(job) {
  const s = job.spec || {};
  if (job.kind === "generate") {
    const text = s.text ? `“${s.text.length > 60 ? s.text.slice(0, 57) + "…" : s.text}”` : s.audio ? "(driven by audio)" : "(no text)";
    const parts = [text];
    if (s.seconds) parts.push(`${s.seconds} s`);
    parts.push(`seed ${s.seed ?? 0}`);
    return parts.join(" · ");
  }
  if (job.kind === "evaluate") return s.job ? `Evaluate job ${short(s.job)}` : `Evaluate upload ${short(s.upload || "")}`;
  const n = job.children?.total ?? (s.items || []).length;
  return `Batch of ${n} item${n === 1 ? "" : "s"}`;
}

function statusLine(job) {
  // One line that says where the job is: queue place and estimated start, progress, or how it ended.
  if (job.kind === "batch" && job.children) {
    const c = job.children;
    const done = c.total - (c.queued || 0) - (c.running || 0);
    const parts = [`${done}/${c.total} finished`];
    if (c.running) parts.push(`${c.running} running`);
    if (c.failed) parts.push(`${c.failed} failed`);
    if (c.canceled) parts.push(`${c.canceled} canceled`);
    if (job.cancel_requested && !TERMINAL.has(job.status)) parts.push("cancel requested");
    return parts.join(" · ");
  }
  if (job.cancel_requested && !TERMINAL.has(job.status)) return "cancel requested…";
  switch (job.status) {
    case "queued": {
      const pos = job.queue_position;
      let text = pos === null || pos === undefined ? "queued" : pos === 0 ? "next in the queue" : `${pos} ahead in the queue`;
      if (job.estimated_start_at) {
        const wait = job.estimated_start_at - Date.now() / 1000;
        text += wait > 1 ? ` · starts in ~${duration(wait)}` : " · starting soon";
      }
      return text;
    }
    case "running":
      return `${job.progress_message || "running"} · ${percent(job.progress)}`;
    case "succeeded": {
      const took = job.finished_at && job.started_at ? ` in ${duration(job.finished_at - job.started_at)}` : "";
      const sync = job.scores?.sync_confidence;
      return `done${took}${Number.isFinite(sync) ? ` · lip-sync ${sync.toFixed(2)}` : ""}`;
    }
    case "failed":
      return job.error?.detail || "failed";
    case "canceled":
      return "canceled";
    case "expired":
      return "the result has expired";
    default:
      return job.status;
  }
}

// --- the job list ---

async function refreshJobs() {
  clearTimeout(state.pollTimer);
  try {
    const page = await api(`/v1/jobs?limit=${LIST_LIMIT}`);
    state.order = page.jobs.map((j) => j.id);
    for (const job of page.jobs) remember(job);
    $("#queue-error").hidden = true;
    renderJobs();
    syncFollowers();
    if (state.selected && state.jobs.has(state.selected)) renderViewer(state.jobs.get(state.selected));
  } catch (e) {
    if (e.status !== 401) showError($("#queue-error"), e);
  }
  const busy = state.order.some((id) => !TERMINAL.has(state.jobs.get(id)?.status));
  state.pollTimer = setTimeout(refreshJobs, busy && !document.hidden ? 2000 : 10000);
}

async function refreshJob(id) {
  try {
    const job = remember(await api(`/v1/jobs/${id}`));
    updateJob(job);
    return job;
  } catch (e) {
    if (e.status !== 401) console.warn(`job ${id}: ${e.detail || e}`);
    return null;
  }
}

function remember(job) {
  // Answers may cross (a listing sent before the final event, read after it): keep the newer view of a job.
  const known = state.jobs.get(job.id);
  if (known && (job.updated_at < known.updated_at || (TERMINAL.has(known.status) && !TERMINAL.has(job.status)))) {
    return known;
  }
  state.jobs.set(job.id, job);
  return job;
}

function renderJobs() {
  const list = $("#jobs");
  const rows = new Map([...list.children].map((li) => [li.dataset.jobId, li]));
  for (const id of state.order) {
    const li = rows.get(id) || jobRow(id);
    fillRow(li, state.jobs.get(id));
    list.append(li); // moves an existing row into order
    rows.delete(id);
  }
  for (const li of rows.values()) li.remove();
  $("#jobs-empty").hidden = state.order.length > 0;
  noteActive();
}

function noteActive() {
  const active = state.order.filter((id) => !TERMINAL.has(state.jobs.get(id).status)).length;
  $("#queue-note").textContent = active ? `${active} active` : state.order.length ? "all finished" : "";
}

function jobRow(id) {
  const open = () => showJob(id);
  return el("li", { class: "job", dataset: { jobId: id } },
    el("span", { class: "badge" }),
    el("button", { type: "button", class: "job-open", onclick: open },
      el("span", { class: "job-title" }), el("span", { class: "job-meta" })),
    el("div", { class: "job-progress" }, el("div", { class: "progress" }, el("div", { class: "bar" })),
      el("span", { class: "job-line" })),
    el("div", { class: "job-actions" },
      el("button", { type: "button", class: "ghost small cancel", onclick: () => cancelJob(id) }, "Cancel")));
}

function fillRow(li, job) {
  li.dataset.status = job.status;
  li.classList.toggle("selected", job.id === state.selected);
  const badge = $(".badge", li);
  badge.textContent = job.status;
  badge.className = `badge ${job.status}`;
  $(".job-title", li).textContent = title(job);
  $(".job-meta", li).textContent = `${job.kind} · ${short(job.id)} · ${clock(job.created_at)}`;
  const progress = TERMINAL.has(job.status) ? (job.status === "succeeded" ? 1 : job.progress) : job.progress;
  $(".bar", li).style.width = percent(progress);
  $(".progress", li).classList.toggle("indeterminate", job.status === "queued");
  $(".job-line", li).textContent = statusLine(job);
  $(".job-line", li).title = statusLine(job);
  $(".cancel", li).hidden = TERMINAL.has(job.status) || job.cancel_requested;
}

function updateJob(job) {
  const li = $(`#jobs li[data-job-id="${job.id}"]`);
  if (li) {
    fillRow(li, job);
    noteActive();
  }
  if (job.id === state.selected) renderViewer(job);
  const child = $(`#viewer tr[data-job-id="${job.id}"]`);
  if (child) fillChildRow(child, job);
}

async function cancelJob(id) {
  try {
    const job = remember(await api(`/v1/jobs/${id}/cancel`, { method: "POST" }));
    updateJob(job);
    syncFollowers();
  } catch (e) {
    if (e.status === 409) refreshJob(id); // it finished meanwhile
    else if (e.status !== 401) showError($("#queue-error"), e);
  }
}

// --- live progress: the events stream, read with fetch ---

function syncFollowers() {
  // Follow the running jobs first, then the queued ones nearest the front; at most MAX_STREAMS streams.
  const ids = new Set(state.order);
  if (state.selected) ids.add(state.selected);
  const active = [...ids].map((id) => state.jobs.get(id)).filter((j) => j && !TERMINAL.has(j.status));
  active.sort((a, b) => (a.status === "running" ? 0 : 1) - (b.status === "running" ? 0 : 1)
    || (a.queue_position ?? 1e9) - (b.queue_position ?? 1e9));
  const wanted = new Set(active.slice(0, MAX_STREAMS).map((j) => j.id));
  for (const [id, controller] of state.followers) {
    if (!wanted.has(id)) {
      controller.abort();
      state.followers.delete(id);
    }
  }
  for (const id of wanted) {
    if (!state.followers.has(id)) {
      const controller = new AbortController();
      state.followers.set(id, controller);
      follow(id, controller.signal).finally(() => {
        if (state.followers.get(id)?.signal === controller.signal) state.followers.delete(id);
      });
    }
  }
}

function stopAllFollowers() {
  for (const controller of state.followers.values()) controller.abort();
  state.followers.clear();
}

async function follow(id, signal) {
  let retryMs = 1000;
  let failures = 0;
  while (!signal.aborted) {
    try {
      const last = state.lastEventId.get(id);
      const r = await api(`/v1/jobs/${id}/events`, {
        headers: last ? { "Last-Event-ID": String(last) } : {}, signal, raw: true,
      });
      failures = 0;
      let ended = false;
      await readEvents(r.body, signal, (event) => {
        if (event.retry) retryMs = event.retry;
        if (event.id) state.lastEventId.set(id, event.id);
        if (event.type && onEvent(id, event.type, event.data)) ended = true;
      });
      if (ended) return; // the final event came; the server closed the stream after it
    } catch (e) {
      if (e.name === "AbortError" || signal.aborted) return;
      if ([401, 403, 404].includes(e.status)) return;
      failures += 1;
    }
    // the stream broke before the final event: resume after the last event seen
    await new Promise((resolve) => setTimeout(resolve, Math.min(10000, retryMs * 2 ** Math.min(failures, 4))));
  }
}

async function readEvents(stream, signal, dispatch) {
  // The text/event-stream format: fields up to a blank line make one event; ':' starts a comment.
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  const onAbort = () => reader.cancel().catch(() => {});
  signal.addEventListener("abort", onAbort);
  let buffer = "";
  let event = { data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end).replace(/\r$/, "");
        buffer = buffer.slice(end + 1);
        if (line === "") {
          if (event.data.length || event.retry) dispatch({ ...event, data: event.data.join("\n") });
          event = { data: [] };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") event.data.push(value);
        else if (field === "event") event.type = value;
        else if (field === "id") event.id = value;
        else if (field === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
      }
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

function onEvent(id, type, text) {
  // Apply one event to the job; true when it was the final one.
  const job = state.jobs.get(id);
  if (!job) return false;
  let data = {};
  try { data = JSON.parse(text); } catch (_) { /* keep {} */ }
  if (type === "progress") {
    Object.assign(job, { status: "running", progress: data.fraction ?? job.progress, progress_message: data.message ?? job.progress_message });
  } else if (type === "started") {
    Object.assign(job, { status: "running", queue_position: null, estimated_start_at: null });
  } else if (type === "cancel-requested") {
    job.cancel_requested = true;
  } else if (TERMINAL.has(type)) {
    refreshJob(id).then((fresh) => { // the whole job now: its result, scores or error
      if (!fresh) updateJob(Object.assign(job, { status: type }));
      syncFollowers();
    });
    return true;
  }
  updateJob(job);
  return false;
}

// --- the viewer: one job, its video, scores and plot ---

async function showJob(id) {
  if (state.selected !== id) {
    state.selected = id;
    state.viewerKey = null;
  }
  for (const li of $("#jobs").children) li.classList.toggle("selected", li.dataset.jobId === id);
  const known = state.jobs.get(id);
  if (known) renderViewer(known);
  const job = await refreshJob(id);
  if (job) syncFollowers();
  if (window.matchMedia("(max-width: 899px)").matches) $("#viewer").scrollIntoView({ behavior: "smooth", block: "start" });
}

function releaseMedia() {
  for (const url of state.blobUrls) URL.revokeObjectURL(url);
  state.blobUrls = [];
  clearTimeout(state.childTimer);
}

function renderViewer(job) {
  const key = `${job.id}:${job.status}`;
  const body = $("#viewer-body");
  if (state.viewerKey === key) { // the same job in the same state: update the live parts only
    const bar = $(".bar", body);
    if (bar) bar.style.width = percent(job.progress);
    const line = $(".viewer-status", body);
    if (line) line.textContent = statusLine(job);
    const badge = $(".badge", body);
    if (badge) badge.textContent = job.status;
    const cancel = $(".viewer-cancel", body);
    if (cancel) cancel.hidden = job.cancel_requested;
    return;
  }
  state.viewerKey = key;
  releaseMedia();
  $("#viewer-empty").hidden = true;
  body.hidden = false;
  body.dataset.jobId = job.id;
  body.dataset.status = job.status;
  body.replaceChildren();

  const parent = job.parent ? el("button", { type: "button", class: "ghost small", onclick: () => showJob(job.parent) }, "← its batch") : null;
  body.append(el("div", { class: "viewer-head" },
    el("div", {},
      el("h2", {}, title(job)),
      el("p", { class: "hint" }, `${job.kind} job `, el("code", {}, job.id), ` · submitted ${clock(job.created_at)}`)),
    el("div", { class: "viewer-tools" }, parent, el("span", { class: `badge ${job.status}` }, job.status))));

  if (!TERMINAL.has(job.status)) {
    body.append(
      el("div", { class: "progress big" + (job.status === "queued" ? " indeterminate" : "") },
        el("div", { class: "bar", style: `width: ${percent(job.progress)}` })),
      el("div", { class: "row between" },
        el("p", { class: "viewer-status" }, statusLine(job)),
        el("button", { type: "button", class: "ghost small viewer-cancel", hidden: job.cancel_requested, onclick: () => cancelJob(job.id) }, "Cancel")));
  } else if (job.status === "failed") {
    body.append(el("p", { class: "error" }, job.error?.detail || "the job failed"),
      job.error?.type ? el("p", { class: "hint" }, `error type: ${job.error.type}`) : null);
  } else if (job.status !== "succeeded") {
    body.append(el("p", { class: "viewer-status" }, statusLine(job)));
  }
  if (job.kind === "batch") renderBatch(job, body);
  else if (job.status === "succeeded") renderResult(job, body);
}

function renderResult(job, body) {
  const hasMedia = Boolean(job.result?.media_type);
  const media = el("div", { class: "media" });
  const side = el("div", { class: "side" });
  body.append(el("div", { class: `result ${job.kind}` }, media, side)); // a plot is wide: it takes the whole row
  if (job.kind === "generate") {
    const video = el("video", { controls: true, playsinline: true, preload: "auto", class: "clip" });
    const link = el("a", { class: "button", download: `avgen-${short(job.id)}.mp4`, "aria-disabled": "true" }, "Download MP4");
    media.append(video, el("div", { class: "row" }, link,
      el("button", { type: "button", class: "ghost", onclick: () => evaluateJob(job.id) }, "Score plot"),
      el("span", { class: "hint media-note" }, "loading the clip…")));
    if (hasMedia) loadResult(job, (url) => { video.src = url; link.href = url; link.removeAttribute("aria-disabled"); $(".media-note", media).textContent = ""; }, media);
  } else if (hasMedia) { // an evaluate job's result is the score plot
    const img = el("img", { class: "plot", alt: "score plot: lip-sync offsets and flicker per second" });
    const link = el("a", { class: "button", download: `avgen-plot-${short(job.id)}.png`, "aria-disabled": "true" }, "Download plot");
    media.append(img, el("div", { class: "row" }, link, el("span", { class: "hint media-note" }, "loading the plot…")));
    loadResult(job, (url) => { img.src = url; link.href = url; link.removeAttribute("aria-disabled"); $(".media-note", media).textContent = ""; }, media);
  } else {
    media.append(el("p", { class: "hint" }, "No plot was asked for."));
  }
  side.append(scoresTable(job.scores, job.spec?.score === false));
}

async function loadResult(job, use, media) {
  // <video src> and <img src> cannot send the API key: fetch the bytes with it and hand them over as a Blob URL.
  const key = state.viewerKey;
  try {
    const r = await api(job.urls.result, { raw: true });
    const blob = await r.blob();
    if (state.viewerKey !== key) return; // the viewer moved on meanwhile
    const url = URL.createObjectURL(blob);
    state.blobUrls.push(url);
    use(url);
  } catch (e) {
    if (state.viewerKey === key) $(".media-note", media).textContent = e.detail || String(e);
  }
}

function scoresTable(scores, notAsked) {
  if (!scores) return el("p", { class: "hint" }, notAsked ? "Not scored (score was off)." : "No scores.");
  const rows = METRICS.filter(([k]) => scores[k] !== null && scores[k] !== undefined).map(([k, label, how, digits]) =>
    el("tr", { dataset: { metric: k } }, el("th", {}, label, el("small", {}, how)),
      el("td", {}, typeof scores[k] === "number" ? scores[k].toFixed(digits) : String(scores[k]))));
  const notes = [];
  if (scores.face) notes.push(`face: ${scores.face}`);
  if (scores.notes?.length) notes.push(...[].concat(scores.notes));
  return el("div", { class: "scores" },
    el("h3", {}, "Scores"),
    rows.length ? el("table", {}, el("tbody", {}, rows)) : null,
    scores.error ? el("p", { class: "error" }, scores.error) : null,
    notes.length ? el("ul", { class: "notes" }, notes.map((n) => el("li", {}, n))) : null);
}

async function evaluateJob(id) {
  // Score a finished generate job again, with the plot: an evaluate job of its MP4.
  try {
    const job = await api("/v1/jobs", { method: "POST", json: { kind: "evaluate", job: id, plot: true } });
    await refreshJobs();
    showJob(job.id);
  } catch (e) {
    if (e.status !== 401) alert(e.detail || String(e));
  }
}

function renderBatch(job, body) {
  const table = el("table", { class: "children" },
    el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "Item"), el("th", {}, "Status"), el("th", {}, "Progress"))),
    el("tbody", {}));
  const tools = el("div", { class: "row" });
  if (TERMINAL.has(job.status)) {
    tools.append(el("button", { type: "button", class: "ghost", onclick: (e) => downloadArchive(job, e.target) }, "Download all (zip)"));
  }
  const summary = el("div", { class: "batch-summary" });
  body.append(summary, el("h3", {}, "Items"), tools, el("div", { class: "table-wrap" }, table));
  const key = state.viewerKey;
  if (TERMINAL.has(job.status)) loadSummary(job, summary, key);
  const poll = async () => {
    try {
      const children = [];
      let cursor = null;
      do { // every page: a batch holds up to 1000 items
        const page = await api(`/v1/jobs?parent=${job.id}&limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
        children.push(...page.jobs);
        cursor = page.next_cursor;
      } while (cursor && state.viewerKey === key);
      if (state.viewerKey !== key) return;
      const tbody = $("tbody", table);
      const rows = new Map([...tbody.children].map((tr) => [tr.dataset.jobId, tr]));
      children.reverse().forEach((child, index) => { // listed newest first: reversed, the items in order
        child = remember(child);
        const tr = rows.get(child.id) || childRow(child, index);
        fillChildRow(tr, child);
        tbody.append(tr);
      });
      const active = children.some((c) => !TERMINAL.has(c.status));
      if (active || !TERMINAL.has(job.status)) state.childTimer = setTimeout(poll, children.length > 100 ? 5000 : 2000);
    } catch (e) {
      if (e.status !== 401 && state.viewerKey === key) tools.append(el("span", { class: "error" }, e.detail || String(e)));
    }
  };
  poll();
}

async function loadSummary(job, node, key) {
  // A finished batch's result is its manifest: the mean and 95% CI of each metric over the scored items.
  try {
    const manifest = await api(job.urls.result);
    if (state.viewerKey !== key || !manifest.summary?.scored) return;
    const rows = METRICS.filter(([k]) => manifest.summary.metrics[k]?.mean !== null && manifest.summary.metrics[k]?.mean !== undefined)
      .map(([k, label, how, digits]) => {
        const m = manifest.summary.metrics[k];
        const ci = m.ci95 === null || m.ci95 === undefined ? "" : ` ± ${m.ci95.toFixed(digits || 1)}`;
        return el("tr", { dataset: { metric: k } }, el("th", {}, label, el("small", {}, `${how} · n = ${m.n}`)),
          el("td", {}, `${m.mean.toFixed(digits || 2)}${ci}`));
      });
    node.replaceChildren(el("div", { class: "scores" }, el("h3", {}, `Scores: mean ± 95% CI over ${manifest.summary.scored} items`),
      el("table", {}, el("tbody", {}, rows))));
  } catch (e) {
    if (e.status !== 401 && state.viewerKey === key) node.replaceChildren(el("p", { class: "error" }, e.detail || String(e)));
  }
}

function childRow(child, index) {
  return el("tr", { dataset: { jobId: child.id }, onclick: () => showJob(child.id), class: "clickable" },
    el("td", {}, String(index + 1)), el("td", { class: "child-title" }), el("td", {}, el("span", { class: "badge" })),
    el("td", { class: "child-line" }));
}

function fillChildRow(tr, child) {
  tr.dataset.status = child.status;
  $(".child-title", tr).textContent = title(child);
  const badge = $(".badge", tr);
  badge.textContent = child.status;
  badge.className = `badge ${child.status}`;
  $(".child-line", tr).textContent = statusLine(child);
}

async function downloadArchive(job, button) {
  button.disabled = true;
  try {
    const r = await api(job.urls.archive, { raw: true });
    const url = URL.createObjectURL(await r.blob());
    el("a", { href: url, download: `avgen-batch-${short(job.id)}.zip` }).click();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (e) {
    if (e.status !== 401) alert(e.detail || String(e));
  } finally {
    button.disabled = false;
  }
}

// --- the forms ---

function showError(node, e) {
  node.textContent = e instanceof ApiError || e?.detail ? e.detail : String(e?.message || e);
  node.hidden = false;
}

function setupTabs() {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      for (const t of document.querySelectorAll(".tab")) t.setAttribute("aria-selected", String(t === tab));
      for (const p of document.querySelectorAll(".panel")) p.hidden = p.dataset.panel !== tab.dataset.tab;
    });
  }
}

function numberField(input, name, { integer = false } = {}) {
  const raw = input.value.trim();
  if (raw === "") return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw new ApiError(422, `${name}: give ${integer ? "a whole number" : "a number"}, not ${JSON.stringify(raw)}`);
  }
  return n;
}

async function submitting(form, run) {
  const button = $("button[type=submit]", form);
  const status = $(".status", form);
  const error = $(".error", form);
  error.hidden = true;
  button.disabled = true;
  try {
    const job = await run((text) => { status.textContent = text; });
    status.textContent = `Submitted: ${short(job.id)}`;
    await refreshJobs();
    showJob(job.id);
    return job;
  } catch (e) {
    status.textContent = "";
    if (e.status === 401) showError(error, new ApiError(401, "Give the API key above, then submit again."));
    else showError(error, e);
    return null;
  } finally {
    button.disabled = form.id === "batch-form" ? !batchState.items.length || batchState.errors.length > 0 : false;
  }
}

function setupGenerate() {
  const form = $("#generate-form");
  $("#g-dice").addEventListener("click", () => { $("#g-seed").value = String(Math.floor(Math.random() * 2 ** 31)); });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    submitting(form, async (status) => {
      const body = { kind: "generate", text: $("#g-text").value.trim(), score: $("#g-score").checked };
      const fields = { seconds: [$("#g-seconds")], seed: [$("#g-seed"), true], steps: [$("#g-steps"), true],
        cfg: [$("#g-cfg")], shift: [$("#g-shift")] };
      for (const [name, [input, integer]] of Object.entries(fields)) {
        const value = numberField(input, name, { integer });
        if (value !== undefined) body[name] = value;
      }
      if ($("#g-sampler").value) body.sampler = $("#g-sampler").value;
      const image = $("#g-image").files[0];
      const audio = $("#g-audio").files[0];
      if (image) body.reference_image = await uploadAs(image, ["image"], "reference face", status);
      if (audio) body.audio = await uploadAs(audio, ["audio", "video"], "driving audio", status);
      status("Submitting…");
      return api("/v1/jobs", { method: "POST", json: body });
    });
  });
}

const batchState = { items: [], lines: [], errors: [] };

function parseJsonl(text) {
  // One request per non-blank line; every problem is reported with its line number before anything is sent.
  const items = [];
  const lines = [];
  const errors = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    const number = index + 1;
    if (!line) return;
    let value;
    try {
      value = JSON.parse(line);
    } catch (e) {
      errors.push([number, `not valid JSON (${e.message})`]);
      return;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      errors.push([number, "give a JSON object, such as {\"text\": \"Hello\", \"seconds\": 2}"]);
      return;
    }
    const kind = value.kind ?? "generate";
    const fields = kind === "generate" ? GENERATE_FIELDS : kind === "evaluate" ? EVALUATE_FIELDS : null;
    if (!fields) {
      errors.push([number, `kind ${JSON.stringify(kind)}: a line is a generate or an evaluate request`]);
      return;
    }
    const problems = [];
    for (const [name, v] of Object.entries(value)) {
      const want = fields[name];
      if (!want) problems.push(`unknown field ${JSON.stringify(name)} (a ${kind} line takes ${Object.keys(fields).filter((f) => f !== "kind").join(", ")})`);
      else if (v === null) continue;
      else if (want === "integer" ? !Number.isInteger(v) : typeof v !== want) problems.push(`${name} must be ${want === "integer" ? "a whole number" : `a ${want}`}`);
    }
    if (problems.length) {
      errors.push([number, problems.join("; ")]);
      return;
    }
    items.push({ ...value, kind });
    lines.push(number);
  });
  if (items.length > 1000) errors.push([lines[1000], `a batch holds at most 1000 items; this has ${items.length}`]);
  return { items, lines, errors };
}

function checkBatch() {
  Object.assign(batchState, parseJsonl($("#b-text").value));
  const list = $("#b-errors");
  list.replaceChildren(...batchState.errors.map(([line, msg]) =>
    el("li", { dataset: { line: String(line) } }, el("strong", {}, `line ${line}: `), msg)));
  list.hidden = batchState.errors.length === 0;
  const n = batchState.items.length;
  $("#b-count").textContent = n || batchState.errors.length
    ? `${n} item${n === 1 ? "" : "s"}${batchState.errors.length ? `, ${batchState.errors.length} line${batchState.errors.length === 1 ? "" : "s"} with errors` : ""}`
    : "";
  $("#b-submit").disabled = n === 0 || batchState.errors.length > 0;
}

function atLines(detail) {
  // The server names an item as items[i]; the person knows it by its line.
  return detail.replace(/items\[(\d+)\]\.?/g, (whole, i) => (batchState.lines[Number(i)] ? `line ${batchState.lines[Number(i)]}: ` : whole));
}

function setupBatch() {
  const form = $("#batch-form");
  let timer = null;
  $("#b-text").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(checkBatch, 150); });
  $("#b-file").addEventListener("change", async () => {
    const file = $("#b-file").files[0];
    if (!file) return;
    $("#b-text").value = await file.text();
    checkBatch();
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    checkBatch();
    if (batchState.errors.length || !batchState.items.length) return;
    submitting(form, async (status) => {
      status(`Submitting ${batchState.items.length} items…`);
      try {
        return await api("/v1/jobs", { method: "POST", json: { kind: "batch", items: batchState.items } });
      } catch (err) {
        if (err.detail) err.detail = atLines(err.detail);
        throw err;
      }
    });
  });
}

function setupEvaluate() {
  const form = $("#evaluate-form");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    submitting(form, async (status) => {
      const file = $("#e-file").files[0];
      if (!file) throw new ApiError(422, "choose a video clip to evaluate");
      const id = await uploadAs(file, ["video"], "clip", status);
      status("Submitting…");
      return api("/v1/jobs", {
        method: "POST",
        json: { kind: "evaluate", upload: id, backend: $("#e-backend").value, plot: $("#e-plot").checked },
      });
    });
  });
}

// --- the server's readiness ---

async function checkReady() {
  const pill = $("#ready");
  try {
    const r = await fetch("/readyz", { cache: "no-store" });
    const body = await r.json().catch(() => ({}));
    pill.textContent = r.ok ? "ready" : "starting";
    pill.className = `pill ${r.ok ? "ok" : "warn"}`;
    pill.title = r.ok ? "the store and the worker pool are ready" : body.detail || "not ready";
  } catch (e) {
    pill.textContent = "offline";
    pill.className = "pill bad";
    pill.title = "the server cannot be reached";
  }
  setTimeout(checkReady, pill.classList.contains("ok") ? 15000 : 3000);
}

document.addEventListener("DOMContentLoaded", () => {
  setupKey();
  setupTabs();
  setupGenerate();
  setupBatch();
  setupEvaluate();
  checkReady();
  refreshJobs();
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshJobs(); });
});
