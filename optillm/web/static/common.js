/* optillm web face: what the playground and the log viewer share.
 * Model output is only ever put in the page as text (textContent / text nodes), never parsed
 * as HTML. The proxy key is asked once and kept in sessionStorage (this tab only). */
"use strict";

const KEY_STORE = "optillm.proxyKey";

/* An element: el("td", {class: "x"}, "text", child, ...). Strings become text nodes. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function proxyKey() { return sessionStorage.getItem(KEY_STORE) || ""; }

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const key = proxyKey();
  if (key) headers["Authorization"] = "Bearer " + key;
  return headers;
}

class AuthNeeded extends Error {}

/* fetch with the proxy key; a 401 raises AuthNeeded, another error status raises Error with
 * the OpenAI error object's message. */
async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = authHeaders(opts.headers);
  const response = await fetch(path, opts);
  if (response.status === 401) throw new AuthNeeded("the proxy key is missing or wrong");
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { const body = await response.json(); message = (body.error && body.error.message) || message; }
    catch (e) { /* not JSON */ }
    const err = new Error(message);
    err.status = response.status;
    throw err;
  }
  return response;
}

/* Ask for the key (once per tab), then call start() again. */
function askForKey(start, message) {
  const form = document.getElementById("key-form");
  const error = document.getElementById("key-error");
  form.hidden = false;
  if (message && proxyKey()) { error.textContent = message; error.hidden = false; }
  document.getElementById("key-input").focus();
  form.onsubmit = (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, document.getElementById("key-input").value.trim());
    form.hidden = true;
    error.hidden = true;
    start();
  };
}

function setUpForgetKey() {
  const button = document.getElementById("forget-key");
  button.hidden = !proxyKey();
  button.onclick = () => { sessionStorage.removeItem(KEY_STORE); location.reload(); };
}

function pretty(value) {
  if (value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function messagesText(request) {
  /* The prompt of one provider call: its messages ("role: content"), or a text prompt. */
  if (!request || typeof request !== "object") return pretty(request);
  if (Array.isArray(request.messages)) {
    return request.messages.map((m) => {
      let content = m.content;
      if (Array.isArray(content)) content = content.map((p) => p.text || pretty(p)).join("\n");
      return (m.role || "?") + ": " + (content === null || content === undefined ? "" : content);
    }).join("\n\n");
  }
  if ("prompt" in request) return pretty(request.prompt);
  return pretty(request);
}

function replyText(response) {
  /* The reply of one provider call: each choice's text (streamed calls keep content). */
  if (!response || typeof response !== "object") return pretty(response);
  if (Array.isArray(response.choices)) {
    return response.choices.map((c, i) => {
      const text = c.message ? c.message.content : (c.content !== undefined ? c.content : c.text);
      const prefix = response.choices.length > 1 ? "[" + (c.index !== undefined ? c.index : i) + "] " : "";
      return prefix + (text === null || text === undefined ? "" : String(text));
    }).join("\n\n");
  }
  if (response.sse) return response.sse;
  return pretty(response);
}

function usageOf(response) {
  return (response && typeof response === "object" && response.usage) || null;
}

function callTokens(call) {
  const u = usageOf(call.response);
  if (!u) return "tokens ?";
  return (u.prompt_tokens !== undefined ? u.prompt_tokens : "?") + " in / " +
    (u.completion_tokens !== undefined ? u.completion_tokens : "?") + " out";
}

/* The trace view of one record: every upstream call with prompt, reply, tokens, duration. */
function renderTrace(record) {
  const calls = record.provider_calls || [];
  const list = el("ol", {class: "trace"});
  calls.forEach((call, i) => {
    const head = el("summary", {},
      el("span", {class: "call-n"}, "call " + (i + 1)),
      el("span", {class: "pill"}, callTokens(call)),
      el("span", {class: "pill"}, (call.duration_ms !== undefined ? call.duration_ms : "?") + " ms"),
      call.error ? el("span", {class: "pill bad"}, "error") : null,
      el("span", {class: "call-preview"}, replyText(call.response).slice(0, 80)));
    list.append(el("li", {class: "trace-entry"}, el("details", {},
      head,
      el("h4", {}, "Prompt"), el("pre", {class: "text"}, messagesText(call.provider_request)),
      el("h4", {}, "Reply"), el("pre", {class: "text"}, replyText(call.response)),
      call.error ? el("p", {class: "error"}, call.error) : null)));
  });
  return el("div", {class: "trace-view"},
    el("h3", {}, "Trace: " + calls.length + " upstream call" + (calls.length === 1 ? "" : "s")),
    calls.length ? list : el("p", {class: "hint"}, "No upstream calls recorded."));
}

function recordSummary(record) {
  let prompt = 0, completion = 0;
  for (const call of record.provider_calls || []) {
    const u = usageOf(call.response);
    if (u) { prompt += u.prompt_tokens || 0; completion += u.completion_tokens || 0; }
  }
  return {calls: (record.provider_calls || []).length, prompt, completion};
}

/* A record's full view: the summary line, the answer, the trace. */
function renderRecord(record) {
  const s = recordSummary(record);
  const final = record.final_response;
  const answer = final && Array.isArray(final.choices) ? replyText(final) : pretty(final);
  return el("div", {class: "record"},
    el("p", {class: "meta-line"},
      el("span", {class: "pill"}, record.approach || "?"),
      el("span", {class: "pill"}, record.model || "?"),
      el("span", {class: "pill"}, s.calls + " upstream calls"),
      el("span", {class: "pill"}, s.prompt + " in / " + s.completion + " out (upstream)"),
      el("span", {class: "pill"}, (record.total_duration_ms || "?") + " ms"),
      el("span", {class: record.error ? "pill bad" : "pill ok"}, record.error ? "error" : "ok")),
    el("p", {class: "hint"}, "request " + record.request_id + " at " + (record.timestamp || "?")),
    record.error ? el("p", {class: "error"}, record.error) : null,
    el("h4", {}, "Request"), el("pre", {class: "text"}, messagesText(record.client_request)),
    el("h4", {}, "Answer"), el("pre", {class: "text"}, answer || ""),
    renderTrace(record));
}
