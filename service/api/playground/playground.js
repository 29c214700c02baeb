// The playground: a thin client of the public REST API (no private routes, no build step).
// Every piece of document or server text reaches the page through textContent (el() and
// append()), never parsed as HTML: a document may contain markup, and it must show as text.

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "grounded.api-key";
const JOB_POLL_MS = 400;
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

const state = {
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  info: null,
  citeButtons: [],
};

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children.map((c) => (c instanceof Node ? c : String(c))));
  return node;
}

function setStatus(text, error = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", error);
}

function authHeaders(extra = {}) {
  return state.key ? { ...extra, Authorization: `Bearer ${state.key}` } : extra;
}

async function detailOf(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg || String(d)).join("; ");
    return JSON.stringify(body);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
  if (response.ok) return response;
  const detail = await detailOf(response);
  if (response.status === 401) askForKey(detail);
  throw new ApiError(response.status, detail);
}

async function getJSON(path) {
  return (await api(path)).json();
}

function postJSON(path, body) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

function report(error) {
  // A 401 has already asked for a key, which says more than the error would.
  if (error.status !== 401) setStatus(error.message, true);
}

// ---- API key -------------------------------------------------------------------------------

function askForKey(detail) {
  $("key-form").hidden = false;
  setStatus(`This server needs an API key (${detail}).`, true);
  $("api-key").focus();
}

function useKey(event) {
  event.preventDefault();
  state.key = $("api-key").value.trim();
  sessionStorage.setItem(KEY_STORAGE, state.key);
  $("api-key").value = "";
  // Confirmed only once the server has taken the key: loadAll() would otherwise clear it at once.
  setStatus("Checking the key…");
  loadAll("Key set for this tab.");
}

function forgetKey() {
  state.key = "";
  sessionStorage.removeItem(KEY_STORAGE);
  setStatus("Key forgotten.");
}

// ---- What the server offers: defaults, collections, jobs, reports ---------------------------

function option(value, label = value) {
  return el("option", { value }, label);
}

function applyInfo(info) {
  state.info = info;
  const d = info.defaults;
  $("top-k").value = d.top_k;
  $("mode").value = d.mode;
  $("fusion").value = d.fusion;
  $("multi-query").value = d.multi_query;
  $("hyde").checked = d.hyde;
  $("rerank").checked = d.rerank && Boolean(info.reranker);
  $("rerank").disabled = !info.reranker;
  $("rerank").parentElement.title = info.reranker
    ? `Reranker: ${info.reranker}`
    : "No reranker is configured";
  for (const id of ["hyde", "multi-query"]) {
    $(id).disabled = !info.transforms;
    $(id).parentElement.title = info.transforms ? "" : "Needs an LLM (GROUNDED_LLM_BASE_URL)";
  }
  const generators = info.transforms ? ["llm", "extractive"] : ["extractive"];
  $("generator").replaceChildren(
    ...generators.map((g) => option(g, g === "llm" ? `LLM (${info.llm_model || "default"})` : g)),
  );
  $("generator").value = info.generator;
  const accept = info.upload.suffixes.join(",");
  $("file-input").setAttribute("accept", accept);
  const mib = (bytes) => `${(bytes / 1048576).toFixed(0)} MiB`;
  $("upload-accept").textContent =
    `${info.upload.suffixes.join(" ")} · up to ${info.upload.max_files} files, ` +
    `${mib(Math.min(info.upload.max_file_bytes, info.upload.max_request_bytes))} in all`;
  $("version").textContent = `grounded ${info.version} · ${info.embedding_model}`;
  $("reports-section").hidden = !info.reports;
  syncControls();
}

function syncControls() {
  const search = $("task").value === "search";
  $("generator").disabled = search;
  $("fusion").disabled = $("mode").value !== "hybrid";
  $("ask").textContent = search ? "Search" : "Ask";
}

async function loadCollections() {
  const collections = await getJSON("/v1/collections");
  const select = $("collection");
  const previous = select.value;
  const names = collections.map((c) => c.name);
  const fallback = state.info?.default_collection;
  if (fallback && !names.includes(fallback)) names.push(fallback);
  select.replaceChildren(...names.map((n) => option(n)));
  select.value = names.includes(previous) ? previous : fallback || names[0] || "";
  $("collections-empty").hidden = collections.length > 0;
  $("collections").replaceChildren(
    ...collections.map((c) =>
      el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: "link",
            "aria-pressed": String(c.name === select.value),
            onclick: () => pickCollection(c.name),
          },
          c.name,
        ),
        el("div", { class: "muted small-text" }, `${c.points} chunks · ${c.model} (${c.dimension}d)`),
      ),
    ),
  );
}

function pickCollection(name) {
  $("collection").value = name;
  for (const button of $("collections").querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.textContent === name));
  }
}

function documentCount(job) {
  return `${job.progress.documents_done}/${job.progress.documents_total}`;
}

async function loadJobs() {
  let jobs;
  try {
    jobs = await getJSON("/v1/jobs?limit=8");
  } catch (error) {
    if (error.status === 403) return; // a read-only key sees no jobs
    throw error;
  }
  $("jobs-section").hidden = jobs.length === 0;
  $("jobs").replaceChildren(
    ...jobs.map((job) =>
      el(
        "tr",
        {},
        el("td", {}, new Date(job.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })),
        el("td", {}, job.collection),
        el("td", { class: `state-${job.state}` }, job.state),
        el("td", {}, documentCount(job)),
      ),
    ),
  );
}

async function loadReports() {
  if (!state.info?.reports) return;
  const reports = await getJSON("/v1/reports");
  $("reports").replaceChildren(
    ...reports.map((r) =>
      el(
        "li",
        {},
        el("button", { type: "button", class: "link", onclick: () => showReport(r) }, r.title || r.path),
        el("div", { class: "muted small-text" }, `${r.path} · ${new Date(r.modified).toLocaleString()}`),
      ),
    ),
  );
  if (reports.length === 0) $("reports").append(el("li", { class: "muted" }, "No reports yet."));
}

async function showReport(report) {
  // Fetched with the key, then shown in a sandboxed frame: no script of it runs, and it cannot
  // reach this page or the key.
  const html = await (await api(`/v1/reports/${report.id}`)).text();
  $("report-title").textContent = report.title || report.path;
  $("report-open").href = `/v1/reports/${report.id}`;
  $("report-frame").srcdoc = html;
  $("report-view").hidden = false;
  $("report-view").scrollIntoView();
}

async function loadAll(done = "") {
  try {
    applyInfo(await getJSON("/v1/info"));
    await Promise.all([loadCollections(), loadJobs(), loadReports()]);
    if (!$("status").classList.contains("error")) setStatus(done);
  } catch (error) {
    report(error);
  }
}

// ---- Asking ------------------------------------------------------------------------------

function requestBody() {
  const info = state.info;
  const body = {
    query: $("question").value,
    collection: $("collection").value || undefined,
    top_k: Number($("top-k").value),
    mode: $("mode").value,
  };
  if (body.mode === "hybrid") body.fusion = $("fusion").value;
  if (info?.reranker) body.rerank = $("rerank").checked;
  if (info?.transforms) {
    body.hyde = $("hyde").checked;
    body.multi_query = Number($("multi-query").value);
  }
  return body;
}

function resetOutput(answering) {
  $("answer-section").hidden = !answering;
  $("answer").replaceChildren();
  $("badges").replaceChildren();
  $("warnings").replaceChildren();
  $("citation").hidden = true;
  $("results-section").hidden = true;
  $("timings-section").hidden = true;
  state.citeButtons = [];
}

async function ask(event) {
  event.preventDefault();
  const body = requestBody();
  const answering = $("task").value === "answer";
  resetOutput(answering);
  $("ask").disabled = true;
  setStatus(answering ? "Answering…" : "Searching…");
  try {
    if (answering) {
      await streamAnswer({ ...body, stream: true, generator: $("generator").value });
    } else {
      showRetrieval(await (await postJSON("/v1/search", body)).json());
    }
    setStatus("");
  } catch (error) {
    report(error);
  } finally {
    $("ask").disabled = false;
  }
}

async function* serverSentEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

async function streamAnswer(body) {
  const response = await postJSON("/v1/query", body);
  const answer = $("answer");
  answer.classList.add("streaming");
  try {
    for await (const { event, data } of serverSentEvents(response)) {
      if (event === "retrieval") showRetrieval(data);
      else if (event === "delta") answer.append(data.text);
      else if (event === "reset") answer.replaceChildren();
      else if (event === "done") showAnswer(data);
      else if (event === "error") throw new ApiError(500, data.detail);
    }
  } finally {
    answer.classList.remove("streaming");
  }
}

function badge(text, kind = "") {
  return el("span", { class: `badge ${kind}` }, text);
}

function showAnswer(result) {
  const badges = [badge(result.model ? `${result.generator} · ${result.model}` : result.generator)];
  if (result.abstained) badges.push(badge("abstained", "warn"));
  if (result.degraded) badges.push(badge(`degraded: ${result.degraded_reason || "LLM failed"}`, "bad"));
  if (result.citations_attributed) badges.push(badge("citations attributed by similarity", "warn"));
  if (result.dropped_citations.length) {
    badges.push(badge(`dropped citations: ${result.dropped_citations.join(", ")}`, "warn"));
  }
  if (!result.abstained && !result.degraded) badges.push(badge("grounded", "ok"));
  $("badges").replaceChildren(...badges);
  renderCited($("answer"), result.answer, result);
  showRetrieval(result);
}

function renderCited(node, text, result) {
  const byNumber = new Map(result.citations.map((c) => [c.number, c]));
  node.replaceChildren();
  let last = 0;
  for (const match of text.matchAll(/\[(\d+)\]/g)) {
    node.append(text.slice(last, match.index));
    const number = Number(match[1]);
    const citation = byNumber.get(number);
    const chunk = result.context[number - 1];
    node.append(citation && chunk ? citeButton(number, citation, chunk) : match[0]);
    last = match.index + match[0].length;
  }
  node.append(text.slice(last));
}

function citeButton(number, citation, chunk) {
  const button = el(
    "button",
    {
      type: "button",
      class: "cite",
      "aria-expanded": "false",
      "aria-controls": "citation",
      "aria-label": `Citation ${number}: ${citation.title || citation.doc_id}`,
      "data-number": String(number),
    },
    `[${number}]`,
  );
  button.addEventListener("click", () => showCitation(button, number, citation, chunk));
  state.citeButtons.push(button);
  return button;
}

function showCitation(button, number, citation, chunk) {
  for (const other of state.citeButtons) other.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-expanded", "true");
  $("citation-number").textContent = `[${number}]`;
  $("citation-title").textContent = citation.title || "(untitled)";
  $("citation-doc").textContent = `${citation.doc_id} · chunk ${chunk.chunk_index}`;
  $("citation-source").textContent = citation.source || "—";
  $("citation-offsets").textContent = `characters ${citation.start}–${citation.end}`;
  $("citation-text").textContent = chunk.text;
  const panel = $("citation");
  panel.hidden = false;
  panel.dataset.returnTo = String(number);
  panel.focus();
}

function closeCitation() {
  const panel = $("citation");
  if (panel.hidden) return;
  panel.hidden = true;
  const back = state.citeButtons.find((b) => b.dataset.number === panel.dataset.returnTo);
  for (const b of state.citeButtons) b.setAttribute("aria-expanded", "false");
  back?.focus();
}

function showTimings(timings) {
  const entries = Object.entries(timings);
  const longest = Math.max(1, ...entries.map(([, ms]) => ms));
  $("timings").replaceChildren(
    ...entries.map(([stage, ms]) => {
      const bar = el("span", { class: "bar" });
      bar.style.width = `${(100 * ms) / longest}%`;
      return el("tr", { "data-stage": stage }, el("td", {}, stage), el("td", {}, ms.toFixed(1)), el("td", {}, bar));
    }),
  );
  $("timings-section").hidden = entries.length === 0;
}

function showRetrieval(result) {
  showTimings(result.timings);
  const warnings = [...result.warnings];
  if (result.route) warnings.push(`routed to ${result.route.name ?? "no source"} (${result.route.router})`);
  $("warnings").replaceChildren(...warnings.map((w) => el("li", {}, w)));
  $("results").replaceChildren(
    ...result.results.map((hit) =>
      el(
        "li",
        { "data-doc": hit.doc_id },
        el(
          "div",
          { class: "hit-head" },
          el("strong", {}, hit.title || hit.doc_id),
          el("span", { class: "score" }, `score ${hit.score.toFixed(4)}`),
          el("span", { class: "muted small-text" }, `${hit.doc_id} · chunk ${hit.chunk_index} · ${hit.start}–${hit.end}`),
        ),
        el("p", { class: "hit-text" }, hit.text),
      ),
    ),
  );
  $("results-section").hidden = false;
  $("results-h").textContent = `Results (${result.mode}${result.fusion ? `, ${result.fusion}` : ""})`;
}

// ---- Upload ------------------------------------------------------------------------------

function sendFiles(files, collection, onProgress) {
  // XMLHttpRequest, not fetch: only it reports upload progress.
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/v1/files?collection=${encodeURIComponent(collection)}`);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (e) => e.lengthComputable && onProgress(e.loaded / e.total));
    xhr.addEventListener("load", () => resolve({ status: xhr.status, body: xhr.response || {} }));
    xhr.addEventListener("error", () => reject(new ApiError(0, "the upload failed (network)")));
    xhr.send(form);
  });
}

function fileRow(name, text, ok) {
  return el("li", { "data-file": name, class: ok ? "file-ok" : "file-error" }, `${name}: ${text}`);
}

function showFiles(files, jobErrors = new Map()) {
  $("upload-files").replaceChildren(
    ...files.map((f) => {
      const error = f.error || jobErrors.get(f.name);
      return error ? fileRow(f.name, error, false) : fileRow(f.name, `${f.documents} document(s)`, true);
    }),
  );
}

async function upload(fileList) {
  const files = [...fileList];
  if (!files.length) return;
  const progress = $("upload-progress");
  progress.hidden = false;
  progress.value = 0;
  const collection = $("collection").value || state.info?.default_collection || "";
  setStatus(`Uploading ${files.length} file(s) to ${collection}…`);
  try {
    const { status, body } = await sendFiles(files, collection, (f) => (progress.value = 50 * f));
    if (status === 401) askForKey(body.detail);
    if (body.files) showFiles(body.files);
    if (status !== 202) throw new ApiError(status, typeof body.detail === "string" ? body.detail : `upload failed (${status})`);
    const job = await followJob(body.job, (done, total) => (progress.value = 50 + (50 * done) / Math.max(total, 1)));
    showFiles(body.files, new Map(job.errors.map((e) => [e.id, e.reason])));
    setStatus(`Ingest job ${job.state}: ${documentCount(job)} documents, ${job.progress.chunks_written} chunks.`, job.state !== "succeeded");
    await Promise.all([loadCollections(), loadJobs()]);
  } catch (error) {
    report(error);
  } finally {
    progress.value = 100;
  }
}

async function followJob(job, onProgress) {
  while (!FINISHED.has(job.state)) {
    onProgress(job.progress.documents_done, job.progress.documents_total);
    await new Promise((r) => setTimeout(r, JOB_POLL_MS));
    job = await getJSON(`/v1/jobs/${job.id}`);
  }
  return job;
}

function wireDropzone() {
  const zone = $("dropzone");
  const over = (on) => (event) => {
    event.preventDefault();
    zone.classList.toggle("over", on);
  };
  zone.addEventListener("dragenter", over(true));
  zone.addEventListener("dragover", over(true));
  zone.addEventListener("dragleave", over(false));
  zone.addEventListener("drop", (event) => {
    over(false)(event);
    upload(event.dataTransfer.files);
  });
  $("file-input").addEventListener("change", async (event) => {
    await upload(event.target.files);
    event.target.value = "";
  });
}

// ---- Start ---------------------------------------------------------------------------------

function start() {
  $("key-form").addEventListener("submit", useKey);
  $("forget-key").addEventListener("click", forgetKey);
  $("ask-form").addEventListener("submit", ask);
  $("task").addEventListener("change", syncControls);
  $("mode").addEventListener("change", syncControls);
  $("refresh").addEventListener("click", () => loadAll());
  $("citation-close").addEventListener("click", closeCitation);
  $("report-close").addEventListener("click", () => ($("report-view").hidden = true));
  document.addEventListener("keydown", (event) => event.key === "Escape" && closeCitation());
  wireDropzone();
  loadAll();
}

start();
