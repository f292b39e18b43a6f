"""Event delivery to an official account's server URL, the way WeChat does it (protocol page §7).

Each event is POSTed in the background with ``signature``/``timestamp``/``nonce``/``openid`` in
the query (plus ``encrypt_type=aes`` and ``msg_signature`` and an encrypted envelope in safe
mode). A try fails on timeout, connection error or a non-200 answer; there are ``tries`` tries in
all (WeChat: 3, each waiting 5 s), all carrying the same query and body. Every push and the
outcome of every try is kept in a log the control API exposes.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from wechat.fake import push_crypto
from wechat.fake.clock import OffsetClock
from wechat.pushes import CardEvent, EventParseError, parse_xml, render_encrypted_envelope, render_event

#: Push records the fake keeps (the newest; older ones are forgotten).
PUSH_HISTORY = 50_000


@dataclass(frozen=True)
class PushTarget:
    """A snapshot of the OA's server configuration at the moment the event happened."""

    appid: str
    url: str | None
    token: str
    encoding_aes_key: str | None
    safe_mode: bool


@dataclass
class PushRecord:
    id: int
    appid: str
    event: str
    card_id: str
    code: str
    from_user: str
    create_time: int
    safe_mode: bool
    status: str = "pending"
    attempts: list[dict[str, Any]] = field(default_factory=list)
    reply: str | None = None


def _nonce() -> str:
    return str(secrets.randbelow(9 * 10**9) + 10**9)


def signed_request(target: PushTarget, event: CardEvent, timestamp: str, nonce: str) -> tuple[dict[str, str], str]:
    """The query parameters and body of one push."""
    xml = render_event(event)
    params = {
        "signature": push_crypto.url_signature(target.token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "openid": event.from_user,
    }
    if not target.safe_mode or not target.encoding_aes_key:
        return params, xml
    encrypted = push_crypto.encrypt(target.encoding_aes_key, target.appid, xml)
    params["encrypt_type"] = "aes"
    params["msg_signature"] = push_crypto.msg_signature(target.token, timestamp, nonce, encrypted)
    return params, render_encrypted_envelope(event.to_user, encrypted)


def classify_reply(target: PushTarget, text: str) -> str:
    """How the OA answered: ``success``/``empty``/``plain``, or for an encrypted reply whether its
    msg_signature and payload check out (WeChat rejects a bad encrypted reply)."""
    stripped = text.strip()
    if not stripped:
        return "empty"
    if stripped == "success":
        return "success"
    if "<Encrypt>" not in stripped or not target.encoding_aes_key:
        return "plain"
    try:
        fields = parse_xml(stripped)
        encrypted = fields["Encrypt"]
        expected = push_crypto.msg_signature(target.token, fields["TimeStamp"], fields["Nonce"], encrypted)
        if expected != fields["MsgSignature"]:
            return "encrypted_bad_signature"
        push_crypto.decrypt(target.encoding_aes_key, target.appid, encrypted)
    except (EventParseError, KeyError):
        return "encrypted_malformed"
    except push_crypto.SafeModeError:
        return "encrypted_bad_payload"
    return "encrypted_ok"


class EventPusher:
    def __init__(
        self,
        clock: OffsetClock,
        *,
        timeout_s: float = 5.0,
        tries: int = 3,
        retry_delay_s: float = 0.0,
        max_workers: int = 32,  # WeChat delivers many events at once, not a few at a time
        history: int = PUSH_HISTORY,
    ) -> None:
        self._clock = clock
        self.timeout_s = timeout_s
        self.tries = tries
        self.retry_delay_s = retry_delay_s
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fake-wechat-push")
        # Kept-alive connections, as WeChat's pushers keep them: a fresh connection per push would
        # cost both ends a TCP set-up per event.
        self._http = requests.Session()
        self._http.mount("http://", HTTPAdapter(pool_maxsize=max_workers))
        self._http.mount("https://", HTTPAdapter(pool_maxsize=max_workers))
        self._lock = threading.Lock()
        # The newest pushes only: a fake that runs for days (staging, soak tests) keeps a bounded
        # history; ids keep counting.
        self._records: deque[PushRecord] = deque(maxlen=history)
        self._submitted = 0

    def submit(self, target: PushTarget, event: CardEvent) -> int:
        with self._lock:
            self._submitted += 1
            record = PushRecord(
                id=self._submitted,
                appid=target.appid,
                event=event.event,
                card_id=event.card_id,
                code=event.user_card_code,
                from_user=event.from_user,
                create_time=event.create_time,
                safe_mode=target.safe_mode,
            )
            self._records.append(record)
            if target.url is None:
                record.status = "no_push_url"
                return record.id
        self._executor.submit(self._deliver, record, target, event)
        return record.id

    def records(self, appid: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(r) for r in self._records if appid is None or r.appid == appid]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def _set(self, record: PushRecord, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(record, name, value)

    def _deliver(self, record: PushRecord, target: PushTarget, event: CardEvent) -> None:
        assert target.url is not None
        try:
            params, body = signed_request(target, event, str(int(self._clock.now())), _nonce())
            for attempt in range(1, self.tries + 1):
                if attempt > 1 and self.retry_delay_s:
                    time.sleep(self.retry_delay_s)
                outcome, reply = self._try_once(target.url, params, body)
                with self._lock:
                    record.attempts.append({"attempt": attempt, **outcome})
                if reply is not None:
                    self._set(record, status="delivered", reply=classify_reply(target, reply))
                    return
            self._set(record, status="failed")
        except Exception as exc:  # a bug here must show in the log, not kill the worker silently
            self._set(record, status=f"error: {type(exc).__name__}: {exc}")

    def _try_once(self, url: str, params: dict[str, str], body: str) -> tuple[dict[str, Any], str | None]:
        started = time.monotonic()
        try:
            response = self._http.post(
                url,
                params=params,
                data=body.encode("utf-8"),
                headers={"Content-Type": "text/xml; charset=utf-8"},
                timeout=self.timeout_s,
            )
        except requests.Timeout:
            return {"outcome": "timeout", "elapsed_s": time.monotonic() - started}, None
        except requests.RequestException as exc:
            return {"outcome": f"connection_error: {type(exc).__name__}", "elapsed_s": time.monotonic() - started}, None
        outcome = {"outcome": f"http_{response.status_code}", "elapsed_s": time.monotonic() - started}
        return outcome, (response.text if response.status_code == 200 else None)

    def verify_url(self, target: PushTarget, echostr: str) -> dict[str, Any]:
        """WeChat's server-URL check (§7.1): a signed GET that must echo ``echostr`` verbatim."""
        if target.url is None:
            return {"ok": False, "outcome": "no_push_url"}
        timestamp, nonce = str(int(self._clock.now())), _nonce()
        params = {
            "signature": push_crypto.url_signature(target.token, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "echostr": echostr,
        }
        try:
            response = requests.get(target.url, params=params, timeout=self.timeout_s)
        except requests.RequestException as exc:
            return {"ok": False, "outcome": f"connection_error: {type(exc).__name__}"}
        return {
            "ok": response.status_code == 200 and response.text == echostr,
            "outcome": f"http_{response.status_code}",
            "body": response.text[:200],
        }
