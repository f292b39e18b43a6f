"""Low-level HTTP for api.weixin.qq.com: one session, a timeout on every call, the JSON envelope
and the in-call retry of errcode -1 (system busy).

No message or log line built here contains a URL: requests' exceptions embed the full URL, whose
query carries ``access_token`` / ``secret``, so failures are reported by endpoint path only and
re-raised ``from None`` (a chained requests exception would print the URL in any traceback).

The session reads the process's environment once, when it is built, for the one host it talks to:
an egress proxy (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY``, unless ``NO_PROXY`` names the
host), a CA bundle (``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``) and ``~/.netrc`` credentials apply
exactly as requests would apply them, and then it stops trusting the environment
(``trust_env = False``). requests otherwise re-reads all of it on every call, which was about a
third of a login's CPU (the login's ``jscode2session`` is the api's one inline WeChat call). A
change to those variables after the process started takes effect on its restart.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.utils import get_netrc_auth

from wechat.errors import ConfigurationError, RetryableError, error_for

log = logging.getLogger(__name__)

Params = Mapping[str, str | int]
JsonObject = dict[str, Any]
#: Pooled connections per host; above the busiest process's thread count.
POOL_SIZE = 32


class WeChatHttp:
    """Sends one WeChat API request and returns the decoded success body, or raises a typed error.

    errcode 0 or absent is success. Timeouts, connection failures, HTTP 5xx/429 and bodies that
    are not a JSON object raise ``RetryableError(None, …)`` at once (a timed-out POST may have
    been executed, so it is not repeated here). errcode -1 is retried inside the call with
    exponential backoff and jitter, then raised. Every other errcode is raised immediately.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 5.0,
        busy_retries: int = 3,
        busy_backoff_s: float = 0.5,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._busy_retries = max(0, busy_retries)
        self._busy_backoff_s = busy_backoff_s
        self._session = _session(self._base) if session is None else session
        self._sleep = sleep
        self._jitter = jitter

    @property
    def base_url(self) -> str:
        return self._base

    def get(self, path: str, params: Params | None = None) -> JsonObject:
        return self._request("GET", path, params, None)

    def post(self, path: str, body: Mapping[str, Any], params: Params | None = None) -> JsonObject:
        return self._request("POST", path, params, body)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> WeChatHttp:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, params: Params | None, body: Mapping[str, Any] | None) -> JsonObject:
        attempt = 0
        while True:
            try:
                return self._once(method, path, params, body)
            except RetryableError as exc:
                if exc.errcode != -1 or attempt >= self._busy_retries:
                    raise
                delay = self._busy_backoff_s * 2**attempt * (0.5 + self._jitter())
                attempt += 1
                log.warning("WeChat busy (-1) on %s; retry %d in %.3fs", path, attempt, delay)
                self._sleep(delay)

    def _once(self, method: str, path: str, params: Params | None, body: Mapping[str, Any] | None) -> JsonObject:
        # ensure_ascii=False: the card API stores \\uXXXX escapes literally instead of decoding them.
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {} if body is None else {"Content-Type": "application/json; charset=utf-8"}
        try:
            response = self._session.request(
                method,
                self._base + path,
                params=params,
                data=data,
                headers=headers,
                timeout=self._timeout_s,
            )
        except requests.Timeout:
            raise RetryableError(None, f"timed out after {self._timeout_s}s", endpoint=path) from None
        except requests.ConnectionError:
            raise RetryableError(None, "connection failed", endpoint=path) from None
        except requests.RequestException as exc:
            raise RetryableError(None, f"request failed ({type(exc).__name__})", endpoint=path) from None
        return _decode(response, path)


def _session(base_url: str) -> requests.Session:
    """A pooled session whose environment settings for ``base_url`` are resolved now, once."""
    session = requests.Session()
    session.headers["User-Agent"] = "cardpipe"
    # One session serves every thread of a worker process: keep a connection per thread.
    session.mount("https://", HTTPAdapter(pool_maxsize=POOL_SIZE))
    session.mount("http://", HTTPAdapter(pool_maxsize=POOL_SIZE))
    settings = session.merge_environment_settings(base_url, {}, None, None, None)
    session.proxies = settings["proxies"]
    session.verify = settings["verify"]
    session.auth = get_netrc_auth(base_url)
    session.trust_env = False
    return session


def _decode(response: requests.Response, path: str) -> JsonObject:
    status = response.status_code
    if status >= 500 or status == 429:
        raise RetryableError(None, f"HTTP {status}", endpoint=path)
    if not 200 <= status < 300:
        raise ConfigurationError(None, f"HTTP {status}", endpoint=path)
    try:
        payload = json.loads(response.content)
    except ValueError:
        raise RetryableError(None, "response is not JSON", endpoint=path) from None
    if not isinstance(payload, dict):
        raise RetryableError(None, "response is not a JSON object", endpoint=path)
    try:
        errcode = int(payload.get("errcode", 0))
    except (TypeError, ValueError):
        raise RetryableError(None, "response has a malformed errcode", endpoint=path) from None
    if errcode != 0:
        log.debug("WeChat %s -> errcode %d", path, errcode)
        raise error_for(errcode, str(payload.get("errmsg", "")), endpoint=path)
    return payload
