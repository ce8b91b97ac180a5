/* The conversation log viewer: the last N records, filterable, each with its trace. */
"use strict";

async function load(event) {
  if (event) event.preventDefault();
  setUpForgetKey();
  const params = new URLSearchParams();
  const approach = document.getElementById("f-approach").value.trim();
  const status = document.getElementById("f-status").value;
  params.set("limit", document.getElementById("f-limit").value || "50");
  if (approach) params.set("approach", approach);
  if (status) params.set("status", status);
  let body;
  try {
    body = await (await api("/v1/optillm/requests?" + params)).json();
  } catch (err) {
    if (err instanceof AuthNeeded) { askForKey(() => { load(); openRequested(); }, err.message); return; }
    document.getElementById("source").textContent = err.message;
    return;
  }
  setUpForgetKey();
  document.getElementById("source").textContent = body.sources.log_files
    ? "from the conversation log files"
    : "conversation logging is off: the recent traced requests of this process (" + body.sources.memory + ")";
  const rows = document.querySelector("#records tbody");
  rows.replaceChildren();
  for (const record of body.data) {
    const s = recordSummary(record);
    const row = el("tr", {class: "record-row", "data-request": record.request_id, tabindex: "0"},
      el("td", {}, (record.timestamp || "").replace("T", " ").slice(0, 19)),
      el("td", {}, record.request_id),
      el("td", {}, record.approach || ""),
      el("td", {}, record.model || ""),
      el("td", {}, String(s.calls)),
      el("td", {}, String(record.total_duration_ms || "")),
      el("td", {class: record.error ? "bad" : "ok"}, record.error ? "error" : "ok"));
    row.addEventListener("click", () => show(record));
    row.addEventListener("keydown", (e) => { if (e.key === "Enter") show(record); });
    rows.append(row);
  }
  document.getElementById("empty").hidden = body.data.length > 0;
}

function show(record) {
  document.getElementById("detail").replaceChildren(renderRecord(record));
}

async function openRequested() {
  const id = new URLSearchParams(location.search).get("request");
  if (!id) return;
  try {
    show(await (await api("/v1/optillm/requests/" + encodeURIComponent(id))).json());
  } catch (err) {
    if (!(err instanceof AuthNeeded)) {
      document.getElementById("detail").replaceChildren(el("p", {class: "error"}, err.message));
    }
  }
}

document.getElementById("filter-form").addEventListener("submit", load);
load().then(openRequested);
