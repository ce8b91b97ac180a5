/* The playground: one prompt, several approaches side by side, each with its trace. */
"use strict";

const state = {approaches: [], defaultModel: null};

async function start() {
  setUpForgetKey();
  let models, info;
  try {
    models = await (await api("/v1/models")).json();
    info = await (await api("/v1/optillm/approaches")).json();
  } catch (err) {
    if (err instanceof AuthNeeded) { askForKey(start, err.message); return; }
    showFormError("Could not load the model list: " + err.message);
    return;
  }
  setUpForgetKey();
  state.approaches = info.data;
  state.defaultModel = info.default_model;
  const approachIds = new Set(info.data.map((a) => a.id));
  const select = document.getElementById("model");
  select.replaceChildren();
  const bases = models.data.filter((m) => m.owned_by !== "optillm" && !approachIds.has(m.id))
    .map((m) => m.id);
  if (info.default_model && !bases.includes(info.default_model)) bases.unshift(info.default_model);
  for (const id of bases) select.append(el("option", {value: id}, id));
  if (info.default_model) select.value = info.default_model;
  if (!bases.length) select.append(el("option", {value: ""}, "(the server's --model)"));

  const box = document.getElementById("approaches");
  box.replaceChildren();
  const ordered = info.data.slice().sort((a, b) => (a.id === "none" ? -1 : b.id === "none" ? 1 : 0));
  for (const approach of ordered) {
    const input = el("input", {type: "checkbox", value: approach.id, name: "approach",
      onchange: renderOptions});
    box.append(el("label", {class: "approach", title: approach.description || ""}, input, approach.id));
  }
  renderOptions();
}

function checkedApproaches() {
  return Array.from(document.querySelectorAll("#approaches input:checked")).map((i) => i.value);
}

/* One small form per picked approach: its options (JSON Schema from /v1/optillm/approaches). */
function renderOptions() {
  const holder = document.getElementById("options");
  const keep = {};
  for (const input of holder.querySelectorAll("[data-option]")) {
    keep[input.dataset.approach + "." + input.dataset.option] = input.type === "checkbox" ? input.checked : input.value;
  }
  holder.replaceChildren();
  for (const id of checkedApproaches()) {
    const approach = state.approaches.find((a) => a.id === id);
    const props = (approach && approach.options && approach.options.properties) || {};
    const names = Object.keys(props);
    if (!names.length) continue;
    const fields = names.map((name) => optionInput(id, name, props[name], keep[id + "." + name]));
    holder.append(el("details", {class: "options"}, el("summary", {}, id + " options (" + names.length + ")"),
      el("div", {class: "option-grid"}, fields)));
  }
}

function optionInput(approach, name, schema, kept) {
  const types = [].concat(schema.type || []);
  const title = [schema.default !== undefined ? "default " + JSON.stringify(schema.default) : "",
    schema.minimum !== undefined ? "min " + schema.minimum : "",
    schema.maximum !== undefined ? "max " + schema.maximum : "",
    schema["x-unit"] || ""].filter(Boolean).join(", ");
  let input;
  const data = {"data-approach": approach, "data-option": name, "data-kind": types[0] || "string"};
  if (schema.enum) {
    input = el("select", data, el("option", {value: ""}, "default"),
      schema.enum.filter((v) => v !== null).map((v) => el("option", {value: String(v)}, String(v))));
  } else if (types.includes("boolean")) {
    input = el("select", data, el("option", {value: ""}, "default"),
      el("option", {value: "true"}, "true"), el("option", {value: "false"}, "false"));
  } else if (types.includes("integer") || types.includes("number")) {
    input = el("input", Object.assign({type: "number", step: types.includes("integer") ? "1" : "any",
      placeholder: schema.default !== undefined && schema.default !== null ? String(schema.default) : ""}, data));
  } else {
    input = el("input", Object.assign({type: "text", placeholder: schema.default !== undefined && schema.default !== null
      ? JSON.stringify(schema.default) : ""}, data));
  }
  if (kept !== undefined) input.value = kept;
  return el("label", {title}, name, input);
}

function optionValues(approach) {
  const out = {};
  for (const input of document.querySelectorAll('#options [data-approach="' + CSS.escape(approach) + '"]')) {
    const raw = input.value.trim();
    if (raw === "") continue;
    const kind = input.dataset.kind;
    if (kind === "integer" || kind === "number") out[input.dataset.option] = Number(raw);
    else if (kind === "boolean") out[input.dataset.option] = raw === "true";
    else if (kind === "array" || kind === "object") {
      try { out[input.dataset.option] = JSON.parse(raw); } catch (e) { out[input.dataset.option] = raw; }
    } else out[input.dataset.option] = raw;
  }
  return out;
}

function showFormError(text) {
  const p = document.getElementById("form-error");
  p.textContent = text;
  p.hidden = !text;
}

function newRequestId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return "pg-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function run(event) {
  event.preventDefault();
  const approaches = checkedApproaches();
  if (!approaches.length) { showFormError("Pick at least one approach."); return; }
  showFormError("");
  const columns = document.getElementById("columns");
  columns.replaceChildren();
  const messages = [];
  const system = document.getElementById("system").value.trim();
  if (system) messages.push({role: "system", content: system});
  messages.push({role: "user", content: document.getElementById("prompt").value});
  const common = {messages, stream: true, stream_options: {include_usage: true}};
  const model = document.getElementById("model").value;
  if (model) common.model = model;
  const maxTokens = document.getElementById("max-tokens").value;
  if (maxTokens) common.max_tokens = Number(maxTokens);
  const temperature = document.getElementById("temperature").value;
  if (temperature) common.temperature = Number(temperature);
  for (const approach of approaches) {
    const body = Object.assign({}, common, optionValues(approach), {optillm_approach: approach});
    const column = new Column(approach);
    columns.append(column.node);
    column.run(body);
  }
}

class Column {
  constructor(approach) {
    this.approach = approach;
    this.requestId = newRequestId();
    this.status = el("span", {class: "pill"}, "waiting");
    this.answer = el("div", {class: "answer text"});
    this.stats = el("dl", {class: "stats"});
    this.metadata = el("div", {class: "metadata"});
    this.trace = el("div", {class: "trace-holder"});
    this.node = el("section", {class: "column card", "data-approach": approach},
      el("header", {}, el("h2", {}, approach), this.status),
      this.answer, this.stats, this.metadata, this.trace);
  }

  setStatus(text, kind) {
    this.status.textContent = text;
    this.status.className = "pill " + (kind || "");
  }

  stat(name, value, cls) {
    this.stats.append(el("dt", {}, name), el("dd", {class: cls}, value));
  }

  async run(body) {
    const started = performance.now();
    const extras = {};
    let usage = null, error = null;
    this.setStatus("streaming");
    try {
      const response = await api("/v1/chat/completions", {method: "POST", body: JSON.stringify(body),
        headers: {"Content-Type": "application/json", "X-Optillm-Trace": "1", "X-Request-ID": this.requestId}});
      this.requestId = response.headers.get("X-Request-ID") || this.requestId;
      await readEvents(response, (event) => {
        if (event.error) { error = event.error.message || JSON.stringify(event.error); return; }
        if (event.usage) usage = event.usage;
        for (const choice of event.choices || []) {
          if (choice.delta && choice.delta.content) this.answer.append(document.createTextNode(choice.delta.content));
          for (const [k, v] of Object.entries(choice)) {
            if (!["index", "delta", "logprobs", "finish_reason"].includes(k)) extras[k] = v;
          }
        }
      });
    } catch (err) {
      if (err instanceof AuthNeeded) { sessionStorage.removeItem(KEY_STORE); askForKey(() => this.run(body), err.message); return; }
      error = err.message;
    }
    const wall = Math.round(performance.now() - started);
    this.setStatus(error ? "error" : "done", error ? "bad" : "ok");
    if (error) this.node.insertBefore(el("p", {class: "error"}, error), this.stats);
    const record = await this.fetchRecord();
    const summary = record ? recordSummary(record) : null;
    const prompt = usage ? usage.prompt_tokens : summary && summary.prompt;
    const completion = usage ? usage.completion_tokens : summary && summary.completion;
    this.stat("prompt tokens", prompt === undefined || prompt === null ? "?" : String(prompt), "prompt-tokens");
    this.stat("completion tokens", completion === undefined || completion === null ? "?" : String(completion), "completion-tokens");
    this.stat("upstream calls", summary ? String(summary.calls) : "?", "upstream-calls");
    this.stat("wall time", wall + " ms", "wall-time");
    this.stats.append(el("dt", {}, "request"), el("dd", {},
      el("a", {href: "/playground/logs?request=" + encodeURIComponent(this.requestId), class: "request-link"}, this.requestId)));
    if (Object.keys(extras).length) {
      this.metadata.append(el("details", {open: true}, el("summary", {}, "Approach metadata"),
        el("pre", {class: "text"}, pretty(extras))));
    }
    this.trace.replaceChildren(record ? renderTrace(record)
      : el("p", {class: "hint"}, "No trace: the record was not found (under several workers " +
        "with conversation logging off, another worker may hold it: run with --log-conversations)."));
  }

  async fetchRecord() {
    /* The record is written when the answer has gone out: retry briefly on 404. */
    for (let attempt = 0; attempt < 20; attempt++) {
      try {
        return await (await api("/v1/optillm/requests/" + encodeURIComponent(this.requestId))).json();
      } catch (err) {
        if (err.status !== 404) return null;
        await new Promise((r) => setTimeout(r, 100 + attempt * 50));
      }
    }
    return null;
  }
}

/* Server-sent events of a fetch response: onEvent(parsed JSON) per `data:` line, until [DONE].
 * A non-stream JSON answer (an error relayed as JSON) is passed whole. */
async function readEvents(response, onEvent) {
  const type = response.headers.get("Content-Type") || "";
  if (!type.includes("text/event-stream")) {
    const body = await response.json();
    if (body.choices) {
      for (const c of body.choices) onEvent({choices: [Object.assign({}, c, {delta: {content: c.message && c.message.content}, message: undefined})]});
      if (body.usage) onEvent({usage: body.usage, choices: []});
    } else onEvent(body);
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      for (const line of block.split(/\r?\n/)) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        try { onEvent(JSON.parse(data)); } catch (e) { /* not JSON: skip */ }
      }
    }
  }
}

document.getElementById("run-form").addEventListener("submit", run);
start();
