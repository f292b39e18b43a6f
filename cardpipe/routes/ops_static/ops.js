// The ops page: tables refresh every 2 s, the last hour's charts every 15 s, from the admin
// endpoints with the token the operator typed (kept for the tab's session only).
"use strict";
(() => {
  const TABLES_EVERY_MS = 2000;
  const CHARTS_EVERY_MS = 15000;
  const language = document.documentElement.lang === "zh" ? "zh" : "en";
  const words = { ...window.OPS_I18N.en, ...window.OPS_I18N[language] };
  const t = (key) => words[key] ?? key;
  let token = sessionStorage.getItem("cardpipe-admin-token") || "";
  let eventNames = {};

  for (const element of document.querySelectorAll("[data-i18n]")) element.textContent = t(element.dataset.i18n);
  document.title = t("title");

  function cell(text, attrs = {}) {
    const td = document.createElement("td");
    td.textContent = text;
    for (const [name, value] of Object.entries(attrs)) td.setAttribute(name, value);
    return td;
  }

  function fill(tableId, rows) {
    document.querySelector(`#${tableId} tbody`).replaceChildren(...rows);
  }

  async function api(path, options = {}) {
    const response = await fetch(path, { ...options, headers: { Authorization: `Bearer ${token}` } });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  function duration(seconds) {
    if (seconds <= 0) return t("expired");
    const minutes = Math.floor(seconds / 60);
    return minutes >= 60 ? `${Math.floor(minutes / 60)} h ${minutes % 60} ${t("minutes_short")}`
      : `${minutes} ${t("minutes_short")}`;
  }

  function queueRow(q) {
    const tr = document.createElement("tr");
    tr.dataset.queue = q.name;
    tr.append(cell(q.name), cell(q.ready, { "data-field": "ready" }), cell(q.delayed, { "data-field": "delayed" }),
      cell(q.in_flight, { "data-field": "in_flight" }),
      cell(q.dead, { "data-field": "dead", class: q.dead ? "bad" : "" }),
      cell(q.oldest_ready_age_s === null ? "–" : q.oldest_ready_age_s.toFixed(1)));
    return tr;
  }

  function workerRow(w) {
    const tr = document.createElement("tr");
    tr.append(cell(w.worker_id, { class: "text" }), cell(w.age_s.toFixed(1), { class: w.age_s > 60 ? "bad" : "" }),
      cell(w.in_flight));
    return tr;
  }

  function wechatState(e) {
    if (e.config_error) return `${t("config_error")}: ${e.config_error}`;
    return e.quota.blocked ? `${t("quota_blocked")}: ${e.quota.reason}` : t("quota_ok");
  }

  function eventRow(e) {
    const tr = document.createElement("tr");
    tr.dataset.event = e.event_id;
    const s = e.tickets_by_state;
    tr.append(cell(`${e.event_id} ${e.name}`, { class: "text" }), cell(e.card_status, { class: "text" }),
      cell(e.orders, { "data-field": "orders" }), cell(e.tickets_ordered, { "data-field": "tickets_ordered" }),
      cell(e.issued, { "data-field": "issued" }));
    for (const state of ["ready", "served", "claimed", "redeemed", "deleted", "revoked"]) {
      tr.append(cell(s[state] ?? 0, { "data-field": state }));
    }
    tr.append(cell(e.claims_per_minute),
      cell(wechatState(e), { class: e.config_error || e.quota.blocked ? "bad text" : "text" }));
    return tr;
  }

  function credentialRow(c) {
    const tr = document.createElement("tr");
    tr.dataset.credential = `${c.appid} ${c.kind}`;
    const left = (Date.parse(c.expires_at) - Date.now()) / 1000;
    const rotated = c.rotated_at ? new Date(c.rotated_at).toLocaleString(language === "zh" ? "zh-CN" : "en-GB") : t("never");
    tr.append(cell(c.appid, { class: "text" }), cell(t(c.kind), { class: "text" }), cell(c.version),
      cell(duration(left), { class: left < 300 ? "bad" : "", "data-field": "expires_in" }),
      cell(rotated, { "data-field": "rotated_at" }));
    return tr;
  }

  function deadLetterRow(d) {
    const tr = document.createElement("tr");
    tr.dataset.redisId = d.redis_id;
    const button = document.createElement("button");
    button.textContent = t("requeue");
    button.className = "requeue";
    button.addEventListener("click", async () => {
      button.disabled = true;
      await api(`/ops/dead-letters/${encodeURIComponent(d.queue)}/${encodeURIComponent(d.redis_id)}/requeue`,
        { method: "POST" });
      refreshTables();
    });
    const action = document.createElement("td");
    action.append(button);
    tr.append(cell(d.queue, { class: "text" }), cell(d.actor, { class: "text" }),
      cell(JSON.stringify(d.args), { class: "text" }), cell(d.error, { class: "text bad" }), cell(d.retries),
      cell(new Date(d.failed_at * 1000).toISOString()), action);
    return tr;
  }

  function status(text) {
    document.getElementById("status").textContent = text;
  }

  async function refreshTables() {
    if (!token) return;
    try {
      const [queues, events, deadLetters] = await Promise.all([api("/ops/queues"), api("/ops/events"),
        api("/ops/dead-letters")]);
      eventNames = Object.fromEntries(events.map((e) => [String(e.event_id), e.name]));
      fill("queues", queues.queues.map(queueRow));
      fill("workers", queues.workers.map(workerRow));
      fill("events", events.map(eventRow));
      fill("dead-letters", deadLetters.map(deadLetterRow));
      status(`${t("updated")} ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      status(String(error));
    }
  }

  function labelText(kind) {
    if (kind === "events") return (label) => (eventNames[label] ? `${label} ${eventNames[label]}` : label);
    return (label) => {
      const [appid, credential] = label.split(" ");
      return credential ? `${appid} ${t(credential)}` : label;
    };
  }

  // A series the page has no figure for yet (a new sampler function) still gets a chart.
  function addMissingFigures(names) {
    const charts = document.querySelector(".charts");
    for (const name of names) {
      if (charts.querySelector(`figure[data-series="${CSS.escape(name)}"]`)) continue;
      const figure = document.createElement("figure");
      figure.className = "chart";
      figure.dataset.series = name;
      const caption = document.createElement("figcaption");
      caption.textContent = words[`chart_${name}`] ?? name;
      figure.append(caption);
      charts.append(figure);
    }
  }

  async function refreshCharts() {
    if (!token) return;
    try {
      if (!Object.keys(eventNames).length) await refreshTables();
      const history = await api("/ops/history?minutes=60");
      addMissingFigures(Object.keys(history.series));
      for (const figure of document.querySelectorAll("figure.chart")) {
        window.OpsCharts.draw(figure, history.minutes, history.series[figure.dataset.series] || {}, {
          scale: Number(figure.dataset.scale || 1), labelText: labelText(figure.dataset.labels), emptyText: t("no_data"),
        });
      }
      fill("credentials", history.credentials.map(credentialRow));
      document.getElementById("charts").dataset.updated = String(Date.now());
    } catch (error) {
      status(String(error));
    }
  }

  function refreshAll() {
    refreshTables();
    refreshCharts();
  }

  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    token = document.getElementById("token").value;
    sessionStorage.setItem("cardpipe-admin-token", token);
    refreshAll();
  });
  setInterval(refreshTables, TABLES_EVERY_MS);
  setInterval(refreshCharts, CHARTS_EVERY_MS);
  refreshAll();
})();
