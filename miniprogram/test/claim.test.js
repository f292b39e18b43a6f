// Runs the claim logic against a running cardpipe (api + workers + fake WeChat).
// Driven by tests/claims/test_client_kit.py, which starts the stack and passes:
// CARDPIPE_API, CARDPIPE_FAKE, MP_APPID, PERSON, ORDER_NO, CANCEL_ORDER_NO, BATCH_ORDER_NOS (A,B),
// OTHER_PERSON, OTHER_ORDER_NO.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { createClaimClient } = require("../claim-logic");
const { createWxShim } = require("./wx-shim");

const env = process.env;
const fast = (ms) => new Promise((r) => setTimeout(r, Math.min(ms, 100)));

function client(wx) {
  return createClaimClient({ wx, apiBase: env.CARDPIPE_API, appid: env.MP_APPID, sleep: fast });
}

test("a user claims their order", async () => {
  const wx = createWxShim({ fakeBase: env.CARDPIPE_FAKE, person: env.PERSON, mpAppid: env.MP_APPID });
  const outcome = await client(wx).claimOrder(env.ORDER_NO);
  assert.equal(outcome.status, "claimed");
  assert.ok(outcome.result.cardList.every((card) => card.isSuccess && card.code));
});

test("after cancelling, the user's retry succeeds", async () => {
  const wx = createWxShim({ fakeBase: env.CARDPIPE_FAKE, person: env.PERSON, mpAppid: env.MP_APPID, cancelNextAddCard: true });
  const claims = client(wx);
  assert.equal((await claims.claimOrder(env.CANCEL_ORDER_NO)).status, "cancelled");
  assert.equal((await claims.claimOrder(env.CANCEL_ORDER_NO)).status, "claimed");
});

test("another user's order is not found", async () => {
  const wx = createWxShim({ fakeBase: env.CARDPIPE_FAKE, person: env.OTHER_PERSON, mpAppid: env.MP_APPID });
  await assert.rejects(client(wx).claimOrder(env.ORDER_NO), /HTTP 404/);
});

test("a user claims two orders with one addCard, then opens one of them", async () => {
  const wx = createWxShim({ fakeBase: env.CARDPIPE_FAKE, person: env.PERSON, mpAppid: env.MP_APPID });
  const claims = client(wx);
  const orderNos = env.BATCH_ORDER_NOS.split(",");
  const outcome = await claims.claimOrders(orderNos);
  assert.equal(outcome.status, "claimed");
  assert.equal(outcome.result.cardList.length, 2);

  await claims.openOrder(orderNos[0]);
  assert.equal(wx.opened.length, 1);
  assert.ok(wx.opened[0].cardId);
  assert.equal(typeof wx.opened[0].code, "string");
});

test("a batch with another user's order is not found", async () => {
  const wx = createWxShim({ fakeBase: env.CARDPIPE_FAKE, person: env.PERSON, mpAppid: env.MP_APPID });
  await assert.rejects(client(wx).claimOrders([env.ORDER_NO, env.OTHER_ORDER_NO]), /HTTP 404/);
});
