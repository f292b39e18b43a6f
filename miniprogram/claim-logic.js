/**
 * cardpipe claim logic for a Mini Program: log in, ask for the order's claim (or several orders'
 * at once), poll until the wx.addCard payload is ready, add the cards, report the result, and
 * show the claimed card with wx.openCard.
 *
 * Plain CommonJS with no dependencies: the Mini Program requires it as is, and node runs the same
 * file in the tests against a running cardpipe with a `wx` shim backed by the fake WeChat.
 */
"use strict";

const ADD_CARD_OK = "addCard:ok";
const ADD_CARD_CANCEL = "addCard:fail cancel";

/** Wrap one callback-style wx API (`{success, fail}`) in a promise. */
function call(wx, name, options) {
  return new Promise((resolve, reject) => {
    wx[name]({ ...options, success: resolve, fail: reject });
  });
}

class ClaimError extends Error {
  constructor(message, details) {
    super(message);
    this.name = "ClaimError";
    this.details = details;
  }
}

function createClaimClient({ wx, apiBase, appid, sleep = (ms) => new Promise((r) => setTimeout(r, ms)) }) {
  let token = null;
  const etags = new Map();
  const payloads = new Map();

  async function request(method, path, data, extraHeaders = {}) {
    const header = { "Content-Type": "application/json", ...extraHeaders };
    if (token) header.Authorization = `Bearer ${token}`;
    const res = await call(wx, "request", { url: apiBase + path, method, data, header });
    return res;
  }

  /** Log in once per client: every other call needs the session token. */
  async function ensureLogin() {
    if (!token) await login();
  }

  async function login() {
    const { code } = await call(wx, "login", {});
    const res = await request("POST", "/v1/sessions", { code, appid });
    if (res.statusCode !== 200) throw new ClaimError(`login refused (HTTP ${res.statusCode})`, res.data);
    token = res.data.token;
    return res.data;
  }

  async function requestClaim(orderNo) {
    const res = await request("POST", `/v1/orders/${encodeURIComponent(orderNo)}/claim`, {});
    if (res.statusCode !== 202) throw new ClaimError(`claim refused (HTTP ${res.statusCode})`, res.data);
    return res.data;
  }

  /** Poll until the payload is ready (or done); honours retry_after_ms and the ETag. */
  async function poll(orderNo, { timeoutMs = 30000 } = {}) {
    const deadline = Date.now() + timeoutMs;
    const path = `/v1/orders/${encodeURIComponent(orderNo)}/claim`;
    for (;;) {
      const headers = etags.has(orderNo) ? { "If-None-Match": etags.get(orderNo) } : {};
      const res = await request("GET", path, undefined, headers);
      let body;
      if (res.statusCode === 304) {
        body = payloads.get(orderNo);
      } else if (res.statusCode === 200) {
        body = res.data;
        const etag = res.header && (res.header.ETag || res.header.etag);
        if (etag) etags.set(orderNo, etag);
        payloads.set(orderNo, body);
      } else {
        throw new ClaimError(`poll failed (HTTP ${res.statusCode})`, res.data);
      }
      if (body.status !== "pending") return body;
      if (Date.now() > deadline) throw new ClaimError("claim still pending", body);
      await sleep(body.retry_after_ms || 500);
    }
  }

  async function addCards(cardList) {
    try {
      return await call(wx, "addCard", { cardList });
    } catch (failure) {
      return failure;
    }
  }

  /**
   * The cardList to report: what wx.addCard returned on success (it carries the encrypted codes),
   * else the one passed to it, so the server re-signs exactly the tickets the attempt spent.
   */
  function reportedList(result, passedList) {
    return result.errMsg === ADD_CARD_OK ? result.cardList : passedList;
  }

  /** What the caller tells the user: the server has already recorded the result either way. */
  function outcomeOf(result) {
    if (result.errMsg === ADD_CARD_OK) return { status: "claimed", result };
    return { status: result.errMsg === ADD_CARD_CANCEL ? "cancelled" : "failed", result };
  }

  async function postResult(orderNo, result, passedList) {
    const res = await request("POST", `/v1/orders/${encodeURIComponent(orderNo)}/claim/result`, {
      errMsg: result.errMsg,
      cardList: reportedList(result, passedList),
    });
    if (res.statusCode !== 202) throw new ClaimError(`result refused (HTTP ${res.statusCode})`, res.data);
    return res.data;
  }

  /**
   * The whole flow for one order. Resolves with {status, result}: "claimed" after addCard:ok,
   * "done" when nothing is left to claim, "cancelled" when the user backed out (call again to
   * retry: the server has re-signed the payload), "failed" otherwise.
   */
  async function claimOrder(orderNo, options = {}) {
    await ensureLogin();
    await requestClaim(orderNo);
    const payload = await poll(orderNo, options);
    if (payload.status === "done") return { status: "done" };
    const result = await addCards(payload.cardList);
    await postResult(orderNo, result, payload.cardList);
    etags.delete(orderNo);
    return outcomeOf(result);
  }

  /** Several orders' claim in one answer; the server's POST is idempotent, so repeating it polls. */
  async function requestClaims(orderNos) {
    const res = await request("POST", "/v1/claims", { order_nos: orderNos });
    if (res.statusCode !== 200) throw new ClaimError(`claims refused (HTTP ${res.statusCode})`, res.data);
    return res.data;
  }

  /** Repeat requestClaims until some order is ready (or all are done), like poll does for one. */
  async function pollClaims(orderNos, { timeoutMs = 30000 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const body = await requestClaims(orderNos);
      if (body.status !== "pending") return body;
      if (Date.now() > deadline) throw new ClaimError("claims still pending", body);
      await sleep(body.retry_after_ms || 500);
    }
  }

  /** Report one wx.addCard's result for the orders whose cards it held (same rules as postResult). */
  async function postResults(orderNos, result, passedList) {
    const res = await request("POST", "/v1/claims/result", {
      order_nos: orderNos,
      errMsg: result.errMsg,
      cardList: reportedList(result, passedList),
    });
    if (res.statusCode !== 202) throw new ClaimError(`result refused (HTTP ${res.statusCode})`, res.data);
    return res.data;
  }

  /**
   * claimOrder for up to ten orders with one wx.addCard, so the user confirms once. Resolves like
   * claimOrder; "claimed" covers the orders that were ready, so call again if `result` lacks some
   * (an order still being issued) or after a cancel.
   */
  async function claimOrders(orderNos, options = {}) {
    await ensureLogin();
    const payload = await pollClaims(orderNos, options);
    if (payload.status === "done") return { status: "done" };
    const result = await addCards(payload.cardList);
    await postResults(orderNos, result, payload.cardList);
    return outcomeOf(result);
  }

  /** The order's cards in the user's card package, [{cardId, code}] with the real code. */
  async function cardsOf(orderNo) {
    const res = await request("GET", `/v1/orders/${encodeURIComponent(orderNo)}/cards`);
    if (res.statusCode !== 200) throw new ClaimError(`cards refused (HTTP ${res.statusCode})`, res.data);
    return res.data.cardList;
  }

  /** Show claimed cards; `cards` are [{cardId, code}] with the real code, as cardsOf returns them. */
  function openCards(cards) {
    return call(wx, "openCard", { cardList: cards });
  }

  /**
   * Show an order's tickets. Right after wx.addCard the list may still be empty: the server
   * confirms the result asynchronously, so retry (bounded) until the cards are there.
   */
  async function openOrder(orderNo, { timeoutMs = 10000, retryMs = 500 } = {}) {
    await ensureLogin();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const cards = await cardsOf(orderNo);
      if (cards.length) return openCards(cards);
      if (Date.now() > deadline) throw new ClaimError("no card of the order in the card package yet");
      await sleep(retryMs);
    }
  }

  return {
    login,
    requestClaim,
    poll,
    addCards,
    postResult,
    claimOrder,
    requestClaims,
    pollClaims,
    postResults,
    claimOrders,
    cardsOf,
    openCards,
    openOrder,
  };
}

module.exports = { createClaimClient, ClaimError, ADD_CARD_OK, ADD_CARD_CANCEL };
