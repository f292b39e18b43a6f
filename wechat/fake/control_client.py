"""``FakeWeChatControl``: drives a running fake over HTTP (tests, the demo, benchmarks)."""

from __future__ import annotations

import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from wechat.fake.control import PREFIX


class FakeControlError(RuntimeError):
    """The control API refused a call (unknown entity, impossible setup, refused action)."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"fake control HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class FakeWeChatControl:
    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._session = requests.Session()
        # One control client serves every simulated user thread of a test or the demo.
        self._session.mount("http://", HTTPAdapter(pool_maxsize=64))

    def close(self) -> None:
        self._session.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        response = self._session.request(
            method,
            f"{self.base_url}{PREFIX}{path}",
            json=body,
            params={k: v for k, v in params.items() if v is not None},
            timeout=self._timeout_s,
        )
        payload = response.json()
        if response.status_code >= 400:
            raise FakeControlError(response.status_code, payload)
        return payload

    # --- world set-up ---------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything: apps, people, cards, tokens, faults, statistics, pushes."""
        self._call("POST", "/reset")

    def configure(self, **settings: float | int) -> dict[str, Any]:
        """token_ttl_s, ticket_ttl_s, token_grace_s, ticket_rotate_grace_s, login_code_ttl_s,
        push_timeout_s, push_tries, push_retry_delay_s."""
        return dict(self._call("POST", "/config", settings))

    def register_oa(
        self,
        appid: str,
        secret: str,
        token: str,
        *,
        encoding_aes_key: str | None = None,
        push_url: str | None = None,
        safe_mode: bool = False,
        original_id: str | None = None,
    ) -> dict[str, Any]:
        body = {
            "appid": appid,
            "secret": secret,
            "token": token,
            "encoding_aes_key": encoding_aes_key,
            "push_url": push_url,
            "safe_mode": safe_mode,
            "original_id": original_id,
        }
        return dict(self._call("POST", "/oa", body))

    def set_ip_whitelist(self, appid: str, addresses: list[str] | None) -> dict[str, Any]:
        """Switch the OA's IP whitelist on with ``addresses`` (token calls from elsewhere get
        40164), or off with None."""
        return dict(self._call("POST", f"/oa/{appid}/settings", {"ip_whitelist": addresses}))

    def set_card_permissions(
        self, appid: str, *, card_feature: bool | None = None, custom_code: bool | None = None
    ) -> dict[str, Any]:
        """Grant or withdraw the OA's card feature (48001 without) and custom-code permission
        (43009 without); None leaves one as it is."""
        body = {k: v for k, v in {"card_feature": card_feature, "custom_code": custom_code}.items() if v is not None}
        return dict(self._call("POST", f"/oa/{appid}/settings", body))

    def register_mp(self, appid: str, secret: str, oa_appid: str | None = None) -> dict[str, Any]:
        return dict(self._call("POST", "/mp", {"appid": appid, "secret": secret, "oa_appid": oa_appid}))

    def add_person(self, name: str, unionid: str | None = None) -> dict[str, Any]:
        return dict(self._call("POST", "/persons", {"name": name, "unionid": unionid}))

    def person(self, name: str) -> dict[str, Any]:
        """``{"name", "unionid", "openids": {appid: openid}}`` over every registered app."""
        return dict(self._call("GET", f"/persons/{name}"))

    def openid(self, person: str, appid: str) -> str:
        return str(self.person(person)["openids"][appid])

    def whitelist(self, oa_appid: str, person: str) -> None:
        self._call("POST", "/whitelist", {"oa_appid": oa_appid, "person": person})

    # --- acting as WeChat users and staff ---------------------------------------------------

    def login(self, person: str, mp_appid: str) -> str:
        """``wx.login`` inside the mini program: a single-use js_code."""
        return str(self._call("POST", "/login", {"person": person, "mp_appid": mp_appid})["code"])

    def review_card(self, card_id: str, approve: bool = True, reason: str = "") -> dict[str, Any]:
        """Finish the card's audit; pushes ``card_pass_check`` / ``card_not_pass_check``."""
        return dict(self._call("POST", f"/cards/{card_id}/review", {"approve": approve, "reason": reason}))

    def edit_card(self, card_id: str, **base_info: Any) -> dict[str, Any]:
        """Edit the card as the organiser would in the back office (get_limit, can_give_friend,
        date_info…); returns the card as ``card/get`` shows it."""
        return dict(self._call("POST", f"/cards/{card_id}/edit", {"base_info": base_info}))

    def card(self, card_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/cards/{card_id}"))

    def add_card(
        self, person: str, mp_appid: str, card_list: list[dict[str, Any]], *, cancel: bool = False
    ) -> dict[str, Any]:
        """``wx.addCard({cardList})`` by ``person`` in ``mp_appid``: the same answer shape
        (``errMsg``, ``cardList``), plus ``errcode`` and the ``_fake`` diagnostics."""
        body = {"person": person, "mp_appid": mp_appid, "cardList": card_list, "cancel": cancel}
        return dict(self._call("POST", "/addcard", body))

    def delete_user_card(self, card_id: str, code: str) -> dict[str, Any]:
        return dict(self._call("POST", "/usercards/delete", {"card_id": card_id, "code": code}))

    def consume_in_back_office(
        self, card_id: str, code: str, *, location_name: str = "", staff_open_id: str = ""
    ) -> dict[str, Any]:
        body = {"card_id": card_id, "code": code, "location_name": location_name, "staff_open_id": staff_open_id}
        return dict(self._call("POST", "/usercards/consume", body))

    def verify_url(self, oa_appid: str, echostr: str | None = None) -> dict[str, Any]:
        """Make the fake run WeChat's server-URL check against the OA's push URL."""
        body = {} if echostr is None else {"echostr": echostr}
        return dict(self._call("POST", f"/oa/{oa_appid}/verify-url", body))

    # --- credentials and time ---------------------------------------------------------------

    def invalidate_tokens(self, appid: str) -> int:
        return int(self._call("POST", "/tokens/invalidate", {"appid": appid})["invalidated"])

    def rotate_ticket(self, appid: str, grace_s: float | None = None) -> str:
        """Issue a new wx_card ticket now; the previous one lives ``grace_s`` more (default 300)."""
        return str(self._call("POST", "/tickets/rotate", {"appid": appid, "grace_s": grace_s})["ticket"])

    def tickets(self, appid: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/tickets/{appid}"))

    def now(self) -> float:
        return float(self._call("GET", "/clock")["now"])

    def advance_clock(self, seconds: float) -> float:
        return float(self._call("POST", "/clock/advance", {"seconds": seconds})["now"])

    def reset_clock(self) -> float:
        return float(self._call("POST", "/clock/reset")["now"])

    # --- faults -----------------------------------------------------------------------------

    def inject_errcode(
        self,
        endpoint: str,
        errcode: int,
        *,
        rate: float = 1.0,
        count: int | None = None,
        appid: str | None = None,
    ) -> int:
        """Answer ``errcode`` on ``endpoint`` (``"*"`` = all) for ``rate`` of the calls, at most
        ``count`` times, only for ``appid``'s calls if given. Returns the rule id."""
        body = {"endpoint": endpoint, "errcode": errcode, "rate": rate, "count": count, "appid": appid}
        return int(self._call("POST", "/faults/errcode", body)["id"])

    def set_latency(self, endpoint: str, seconds: float, *, appid: str | None = None) -> None:
        self._call("POST", "/faults/latency", {"endpoint": endpoint, "seconds": seconds, "appid": appid})

    def clear_faults(self) -> None:
        self._call("POST", "/faults/clear")

    def faults(self) -> dict[str, Any]:
        return dict(self._call("GET", "/faults"))

    def set_quota(self, appid: str, endpoint: str, limit: int | None) -> None:
        """Daily limit of ``endpoint`` for ``appid`` (45009 beyond it); None = WeChat's default."""
        self._call("POST", "/quota", {"appid": appid, "endpoint": endpoint, "limit": limit})

    def reset_quota(self, appid: str | None = None) -> None:
        self._call("POST", "/quota/reset", {"appid": appid})

    # --- what happened ----------------------------------------------------------------------

    def stats(self, appid: str | None = None) -> dict[str, Any]:
        """calls, calls_by_appid, token_fetches, errcodes, quotas, and pushes (of ``appid``)."""
        return dict(self._call("GET", "/stats", appid=appid))

    def reset_stats(self) -> None:
        self._call("POST", "/stats/reset")

    def pushes(self, appid: str | None = None) -> list[dict[str, Any]]:
        return list(self._call("GET", "/pushes", appid=appid))

    def wait_for_pushes(self, appid: str, count: int, *, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The OA's push records once at least ``count`` of them are finished (not pending)."""
        deadline = time.monotonic() + timeout_s
        while True:
            records = self.pushes(appid)
            if sum(r["status"] != "pending" for r in records) >= count:
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} finished pushes for {appid} not seen in {timeout_s}s: {records}")
            time.sleep(0.02)
