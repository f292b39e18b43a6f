"use strict";
// The gate page: scans go to the api while it answers; when it does not, the page decides
// alone from the gate's snapshot (keyed code hashes, states, classes, histories) with the same rules,
// keeps the scans (same nonce as the attempt that failed, so an attempt that did reach the api
// is merged once), and uploads them when the api is back. Everything is kept in localStorage.
(() => {
  const PREFIX = "cardpipe-gate:";
  const SYNC_EVERY_MS = 3000;
  const UPLOAD_BATCH = 500;
  const STATE_OF_CHAR = { c: "claimed", r: "redeemed", x: "revoked", d: "deleted", n: "ready" };
  const MESSAGES = {
    ok: "welcome", invalid: "no such ticket code", not_claimed: "ticket not claimed into WeChat yet",
    already_redeemed: "already used", revoked: "ticket revoked", deleted: "ticket deleted by its holder",
    wrong_event: "ticket of another event", outside_window: "outside admission hours",
    limit_reached: "all entries used", day_limit_reached: "all of today's entries used",
    already_inside: "already inside: exit first", not_inside: "not inside", capacity_full: "venue full: wait",
    not_on_list: "ticket class not admitted here",
  };
  const $ = (id) => document.getElementById(id);

  const store = {
    get(key, fallback) {
      try {
        const value = localStorage.getItem(PREFIX + key);
        return value === null ? fallback : JSON.parse(value);
      } catch (error) {
        return fallback;
      }
    },
    set(key, value) {
      try {
        localStorage.setItem(PREFIX + key, JSON.stringify(value));
      } catch (error) {
        // Quota exceeded: the value stays in memory for this page's life.
      }
    },
  };

  let token = store.get("token", "");
  let snap = store.get("snapshot", null);
  let pending = store.get("pending", []);
  let counts = store.get("counts", { synced: 0, conflicts: 0 });
  let hmacKey = null;
  let syncing = false;

  function newNonce() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function hexBytes(hex) {
    return new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16)));
  }

  async function loadKey() {
    hmacKey = snap ? await crypto.subtle.importKey(
      "raw", hexBytes(snap.key), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]) : null;
  }

  async function codeHash(code) {
    const signature = new Uint8Array(await crypto.subtle.sign("HMAC", hmacKey, new TextEncoder().encode(code)));
    let text = "";
    signature.slice(0, 12).forEach((b) => { text += String.fromCharCode(b); });
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_");
  }

  function api(method, path, body) {
    return fetch(path, {
      method,
      cache: "no-store",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  function setOnline(online) {
    $("status").dataset.online = String(online);
    $("status").textContent = online ? "online" : "OFFLINE — deciding locally";
  }

  function render() {
    $("pending").textContent = String(pending.length);
    $("synced").textContent = String(counts.synced);
    $("conflicts").textContent = String(counts.conflicts);
    $("tickets").textContent = String(snap ? Object.keys(snap.states).length : 0);
  }

  function show(result, code, message, offline) {
    const box = $("result");
    box.className = result === "ok" ? "ok" : result === "error" ? "error" : "refused";
    box.dataset.result = result;
    box.dataset.offline = String(offline);
    box.textContent = `${result === "ok" ? "✔" : "✘"} ${message || MESSAGES[result] || result}`;
    const where = document.createElement("span");
    where.className = "where";
    where.textContent = `${code} · ${result}${offline ? " · decided offline" : ""}`;
    box.appendChild(where);
  }

  function fromSnapshot(body) {
    const states = {};
    const classes = {};
    const numbered = body.ticket_classes;
    for (let i = 0, n = 0; i < body.codes.length; i += 16, n += 1) {
      const hash = body.codes.slice(i, i + 16);
      states[hash] = body.states[n];
      if (numbered && numbered.of[n]) classes[hash] = numbered.names[numbered.of[n] - 1];
    }
    return {
      list: body.list, key: body.hash.key, cursor: body.cursor, inside_now: body.inside_now,
      states, classes, history: body.history, gate: body.gate.name,
    };
  }

  function serverHistory(hash) {
    const raw = snap.history[hash];
    return raw ? { entries: raw[0], day: raw[1], day_entries: raw[2], inside: raw[3] }
      : { entries: 0, day: null, day_entries: 0, inside: false };
  }

  function localView(hash) {
    // Pending scans folded over their own tickets' histories: a re-entry without exit is not
    // one more inside.
    const histories = {};
    let state = STATE_OF_CHAR[snap.states[hash]];
    let insideNow = snap.inside_now;
    for (const scan of pending) {
      if (scan.result !== "ok") continue;
      const before = histories[scan.hash] || serverHistory(scan.hash);
      histories[scan.hash] = CardpipeRules.after(snap.list, before, scan.direction, new Date(scan.scanned_at));
      insideNow += Number(histories[scan.hash].inside) - Number(before.inside);
      if (scan.hash === hash && (snap.list.policy || "single") === "single" && scan.direction === "entry") {
        state = "redeemed";
      }
    }
    return { state, history: histories[hash] || serverHistory(hash), insideNow: Math.max(insideNow, 0) };
  }

  async function rememberServerScan(code, direction) {
    // An admitted online scan, so that a gate going offline right after still knows it.
    if (!snap || !hmacKey) return;
    const hash = await codeHash(code);
    if (!(hash in snap.states)) return;
    const history = CardpipeRules.after(snap.list, serverHistory(hash), direction, new Date());
    snap.history[hash] = [history.entries, history.day, history.day_entries, history.inside];
    if ((snap.list.policy || "single") === "single" && direction === "entry") snap.states[hash] = "r";
    store.set("snapshot", snap);
  }

  async function decideOffline(code, direction, nonce) {
    if (!snap || !hmacKey) {
      show("error", code, "api unreachable and no snapshot yet", true);
      return;
    }
    const hash = await codeHash(code);
    const at = new Date();
    let result = "invalid";
    if (hash in snap.states) {
      const view = localView(hash);
      const ticketClass = (snap.classes || {})[hash];
      result = CardpipeRules.decide(snap.list, view.state, view.history, direction, at, view.insideNow, ticketClass);
    }
    pending.push({ nonce, code, hash, direction, scanned_at: at.toISOString(), result });
    store.set("pending", pending);
    show(result, code, MESSAGES[result], true);
    render();
  }

  async function scan(code, direction) {
    const nonce = newNonce();
    if ($("status").dataset.online !== "false") {
      try {
        const response = await api("POST", "/v1/redemptions", { code, nonce, direction });
        if (response.status < 500) {
          const body = await response.json();
          if (response.ok) {
            show(body.result, code, body.message, false);
            if (body.ok) await rememberServerScan(code, direction);
          } else {
            show("error", code, typeof body.detail === "string" ? body.detail : "scan refused", false);
          }
          return;
        }
      } catch (error) {
        // The api is unreachable: decide here.
      }
      setOnline(false);
    }
    await decideOffline(code, direction, nonce);
  }

  async function upload() {
    while (pending.length) {
      const batch = pending.slice(0, UPLOAD_BATCH);
      const response = await api("POST", "/v1/gate/scans", {
        scans: batch.map(({ hash, ...scan }) => scan),
      });
      if (!response.ok) throw new Error(`upload answered ${response.status}`);
      const report = await response.json();
      const done = new Set(report.outcomes.map((o) => o.nonce));
      pending = pending.filter((scan) => !done.has(scan.nonce));
      counts = { synced: counts.synced + report.recorded, conflicts: counts.conflicts + report.conflicts };
      store.set("pending", pending);
      store.set("counts", counts);
      render();
    }
  }

  async function refresh() {
    if (!snap) {
      const response = await api("GET", "/v1/gate/snapshot");
      if (!response.ok) throw new Error(`snapshot answered ${response.status}`);
      snap = fromSnapshot(await response.json());
      await loadKey();
    } else {
      const response = await api("GET", `/v1/gate/deltas?cursor=${encodeURIComponent(snap.cursor)}`);
      if (!response.ok) throw new Error(`deltas answered ${response.status}`);
      const delta = await response.json();
      Object.assign(snap.states, delta.states);
      snap.classes = Object.assign(snap.classes || {}, delta.classes);
      Object.assign(snap.history, delta.history);
      snap.list = delta.list;
      snap.cursor = delta.cursor;
      snap.inside_now = delta.inside_now;
    }
    store.set("snapshot", snap);
    $("gate-name").textContent = `Gate ${snap.gate} · ${snap.list.name} (${snap.list.policy})`;
  }

  async function sync() {
    if (!token || syncing) return;
    syncing = true;
    try {
      await upload();
      await refresh();
      setOnline(true);
    } catch (error) {
      setOnline(false);
    } finally {
      syncing = false;
      render();
    }
  }

  function start() {
    $("login").hidden = true;
    $("scanner").hidden = false;
    $("code").focus();
    render();
    sync();
    setInterval(sync, SYNC_EVERY_MS);
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    store.set("token", token);
    start();
  });

  $("scan-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const code = $("code").value.trim();
    $("code").value = "";
    $("code").focus();
    if (code) await scan(code, $("direction").value);
  });

  $("forget").addEventListener("click", () => {
    if (pending.length) {
      show("error", "-", `${pending.length} scans not uploaded yet: stay signed in until the api is back`, true);
      return;
    }
    for (const key of ["token", "snapshot", "pending", "counts"]) localStorage.removeItem(PREFIX + key);
    window.location.reload();
  });

  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/gate/sw.js", { scope: "/gate" }).catch(() => {
      // Without it the page still works; it only cannot be reopened while the api is away.
    });
  }
  loadKey().then(() => { if (token) start(); });
})();
