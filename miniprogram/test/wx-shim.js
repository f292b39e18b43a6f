/**
 * A `wx` object for node whose login and addCard are the fake WeChat's simulated user actions
 * and whose request is a real HTTP call: the claim logic runs unchanged against a real stack.
 */
"use strict";

async function post(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  return res.json();
}

function createWxShim({ fakeBase, person, mpAppid, cancelNextAddCard = false }) {
  const shim = {
    cancelNextAddCard,
    opened: [],
    login({ success, fail }) {
      post(`${fakeBase}/__fake__/login`, { person, mp_appid: mpAppid }).then((r) => success({ code: r.code }), fail);
    },
    request({ url, method = "GET", data, header = {}, success, fail }) {
      const init = { method, headers: header };
      if (data !== undefined && method !== "GET") init.body = JSON.stringify(data);
      fetch(url, init)
        .then(async (res) => {
          const text = await res.text();
          let body = text;
          try { body = text ? JSON.parse(text) : ""; } catch { /* not JSON */ }
          success({ statusCode: res.status, data: body, header: Object.fromEntries(res.headers.entries()) });
        })
        .catch(fail);
    },
    addCard({ cardList, success, fail }) {
      const cancel = shim.cancelNextAddCard;
      shim.cancelNextAddCard = false;
      post(`${fakeBase}/__fake__/addcard`, { person, mp_appid: mpAppid, cardList, cancel }).then(
        (r) => (r.errMsg === "addCard:ok" ? success(r) : fail(r)),
        fail,
      );
    },
    openCard({ cardList, success }) {
      shim.opened.push(...cardList);
      success({ errMsg: "openCard:ok" });
    },
  };
  return shim;
}

module.exports = { createWxShim };
