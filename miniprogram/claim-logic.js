/**
 * cardpipe claim logic for a Mini Program: log in, ask for the order's claim, poll until the
 * wx.addCard payload is ready, add the cards, report the result, open the card.
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

  async function postResult(orderNo, result, passedList) {
    const cardList = result.errMsg === ADD_CARD_OK ? result.cardList : passedList;
    const res = await request("POST", `/v1/orders/${encodeURIComponent(orderNo)}/claim/result`, {
      errMsg: result.errMsg,
      cardList,
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
    if (!token) await login();
    await requestClaim(orderNo);
    const payload = await poll(orderNo, options);
    if (payload.status === "done") return { status: "done" };
    const result = await addCards(payload.cardList);
    await postResult(orderNo, result, payload.cardList);
    etags.delete(orderNo);
    if (result.errMsg === ADD_CARD_OK) return { status: "claimed", result };
    return { status: result.errMsg === ADD_CARD_CANCEL ? "cancelled" : "failed", result };
  }

  /** Show a claimed card; `cards` are [{cardId, code}] with the decrypted code. */
  function openCards(cards) {
    return call(wx, "openCard", { cardList: cards });
  }

  return { login, requestClaim, poll, addCards, postResult, claimOrder, openCards };
}

module.exports = { createClaimClient, ClaimError, ADD_CARD_OK, ADD_CARD_CANCEL };
