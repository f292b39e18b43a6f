"use strict";
// The Readiness section: the go-live checks of /ops/readiness, with the page's stored admin token.
(() => {
  const EVERY_MS = 60000;
  const MARK = { ok: "ok", warning: "warning", failing: "FAILING" };
  function td(text, cls) {
    const cell = document.createElement("td");
    cell.textContent = text;
    cell.className = cls || "text";
    return cell;
  }
  function rows(report) {
    const head = document.createElement("tr");
    head.dataset.scope = report.scope;
    head.append(td(report.scope), td(report.ready ? "ready" : "NOT READY", report.ready ? "text" : "text bad"),
      td(`${report.counts.ok} ok, ${report.counts.warning} warning, ${report.counts.failing} failing`), td(""), td(""));
    const items = report.items.filter((item) => item.status !== "ok").map((item) => {
      const tr = document.createElement("tr");
      tr.dataset.key = item.key;
      tr.append(td(""), td(MARK[item.status], item.status === "failing" ? "text bad" : "text"),
        td(`${item.section}: ${item.title}`), td(item.detail), td(item.remedy || ""));
      return tr;
    });
    return [head, ...items];
  }
  async function check() {
    const token = sessionStorage.getItem("cardpipe-admin-token");
    const note = document.getElementById("readiness-status");
    if (!token) return;
    note.textContent = "…";
    try {
      const response = await fetch("/ops/readiness", { headers: { Authorization: `Bearer ${token}` } });
      if (!response.ok) throw new Error(`/ops/readiness: HTTP ${response.status}`);
      const reports = await response.json();
      document.querySelector("#readiness tbody").replaceChildren(...reports.flatMap(rows));
      note.textContent = new Date().toLocaleTimeString();
    } catch (error) {
      note.textContent = String(error);
    }
  }
  document.getElementById("readiness-check").addEventListener("click", check);
  setInterval(check, EVERY_MS);
  check();
})();
