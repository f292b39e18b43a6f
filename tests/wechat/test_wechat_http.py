"""The HTTP layer: envelope, busy retries, non-retried errors, transport failures, and that no
secret reaches an exception or a log line."""

from __future__ import annotations

import logging
import traceback
import uuid
from typing import TYPE_CHECKING

import pytest
import requests

from cardpipe.logsetup import RedactSecrets
from wechat.client import fetch_access_token
from wechat.errors import (
    BusinessError,
    ConfigurationError,
    DailyQuotaError,
    MinuteQuotaError,
    RetryableError,
    TokenInvalidError,
)
from wechat.fake import FakeWeChatControl
from wechat.http import WeChatHttp

if TYPE_CHECKING:
    from tests.wechat.conftest import PushReceiver
    from tests.worlds import World


def _card_get_calls(fake: FakeWeChatControl, appid: str) -> int:
    return int(fake.stats()["calls_by_appid"].get(appid, {}).get("/card/get", 0))


def test_busy_is_retried_with_exponential_backoff_then_succeeds(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    fake.inject_errcode("/card/get", -1, count=2, appid=world.oa_appid)

    card = world.api.card_get(card_id)

    assert card["card_type"] == "MEETING_TICKET"
    assert _card_get_calls(fake, world.oa_appid) == 3
    assert world.sleeps == [0.001, 0.002]  # base · 2ⁿ · (0.5 + jitter 0.5)


def test_busy_gives_up_after_the_configured_retries(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    fake.inject_errcode("/card/get", -1, appid=world.oa_appid)

    with pytest.raises(RetryableError) as caught:
        world.api.card_get(card_id)

    assert caught.value.errcode == -1
    assert caught.value.endpoint == "/card/get"
    assert _card_get_calls(fake, world.oa_appid) == 4
    assert world.sleeps == [0.001, 0.002, 0.004]


def test_daily_quota_is_not_retried(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    fake.inject_errcode("/card/get", 45009, appid=world.oa_appid)

    with pytest.raises(DailyQuotaError):
        world.api.card_get(card_id)

    assert _card_get_calls(fake, world.oa_appid) == 1
    assert world.sleeps == []


@pytest.mark.parametrize(
    ("errcode", "error"),
    [(45011, MinuteQuotaError), (48001, ConfigurationError), (40056, BusinessError)],
)
def test_other_errors_are_not_retried(
    world: World, fake: FakeWeChatControl, errcode: int, error: type[Exception]
) -> None:
    card_id = world.create_card()
    fake.inject_errcode("/card/get", errcode, appid=world.oa_appid)

    with pytest.raises(error):
        world.api.card_get(card_id)

    assert _card_get_calls(fake, world.oa_appid) == 1


def test_timeout_is_retryable_and_not_repeated(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    http = WeChatHttp(world.base_url, timeout_s=0.2)
    token = world.tokens.current()
    fake.set_latency("/card/get", 0.6, appid=world.oa_appid)

    with pytest.raises(RetryableError) as caught:
        http.post("/card/get", {"card_id": card_id}, {"access_token": token})

    assert caught.value.errcode is None
    assert "timed out" in str(caught.value)
    assert _card_get_calls(fake, world.oa_appid) == 1


def _secret_free(exc: BaseException, *secrets: str) -> None:
    rendered = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for secret in secrets:
        assert all(secret not in text for text in rendered)


def test_exceptions_never_carry_the_token_or_the_secret(
    world: World, fake: FakeWeChatControl, closed_port_url: str
) -> None:
    token = world.tokens.current()
    fake.set_latency("/cgi-bin/ticket/getticket", 0.6, appid=world.oa_appid)
    fake.set_latency("/cgi-bin/token", 0.6, appid=world.oa_appid)
    slow = WeChatHttp(world.base_url, timeout_s=0.2)

    with pytest.raises(RetryableError) as timed_out:
        slow.get("/cgi-bin/ticket/getticket", {"access_token": token, "type": "wx_card"})
    _secret_free(timed_out.value, token)

    with pytest.raises(RetryableError) as token_timeout:
        fetch_access_token(slow, world.oa_appid, world.oa_secret)
    _secret_free(token_timeout.value, world.oa_secret)

    refused = WeChatHttp(closed_port_url.rsplit("/", 1)[0], timeout_s=0.5)
    with pytest.raises(RetryableError) as unreachable:
        fetch_access_token(refused, world.oa_appid, world.oa_secret)
    _secret_free(unreachable.value, world.oa_secret)

    fake.clear_faults()
    with pytest.raises(ConfigurationError) as bad_secret:
        fetch_access_token(world.http, world.oa_appid, world.oa_secret + "x")
    _secret_free(bad_secret.value, world.oa_secret)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_debug_logs_of_a_token_fetch_hold_no_secret(world: World) -> None:
    # On urllib3's own logger, so these handlers see each record before any handler further up
    # (a redacting filter rewrites the shared record in place).
    raw, redacted = _Collect(), _Collect()
    redacted.addFilter(RedactSecrets())
    urllib3_log = logging.getLogger("urllib3")
    old_level = urllib3_log.level
    urllib3_log.setLevel(logging.DEBUG)
    urllib3_log.addHandler(raw)
    urllib3_log.addHandler(redacted)
    try:
        token = fetch_access_token(world.http, world.oa_appid, world.oa_secret)
    finally:
        urllib3_log.removeHandler(raw)
        urllib3_log.removeHandler(redacted)
        urllib3_log.setLevel(old_level)

    # urllib3 logs the request line, query string and all: the filter is what protects it.
    assert any(world.oa_secret in line for line in raw.lines)
    assert any("/cgi-bin/token" in line for line in redacted.lines)
    assert all(world.oa_secret not in line and token.value not in line for line in redacted.lines)


def test_logged_tracebacks_are_redacted_too(closed_port_url: str) -> None:
    secret = uuid.uuid4().hex
    handler = _Collect()
    handler.addFilter(RedactSecrets())
    log = logging.getLogger("tests.redaction")
    log.addHandler(handler)
    try:
        requests.get(f"{closed_port_url}?appid=wx1&secret={secret}", timeout=0.5)
    except requests.RequestException:
        log.exception("raw requests failure")
    finally:
        log.removeHandler(handler)
    (line,) = handler.lines
    assert "ConnectionError" in line
    assert secret not in line


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (502, "<html>bad gateway</html>", RetryableError),
        (200, "<html>captive portal</html>", RetryableError),
        (200, "[1, 2]", RetryableError),
        (404, "not found", ConfigurationError),
    ],
)
def test_transport_level_failures(receiver: PushReceiver, status: int, body: str, error: type[Exception]) -> None:
    receiver.status = status
    receiver.reply = lambda request: body
    http = WeChatHttp(receiver.url.rsplit("/", 2)[0], timeout_s=1.0)
    token = uuid.uuid4().hex

    with pytest.raises(error) as caught:
        http.get("/card/get", {"access_token": token})

    assert getattr(caught.value, "errcode", "absent") is None
    _secret_free(caught.value, token)


def test_errcode_zero_or_absent_is_success(receiver: PushReceiver) -> None:
    http = WeChatHttp(receiver.url.rsplit("/", 2)[0])
    receiver.reply = lambda request: '{"access_token": "x", "expires_in": 7200}'
    assert http.get("/cgi-bin/token")["expires_in"] == 7200
    receiver.reply = lambda request: '{"errcode": 0, "errmsg": "ok"}'
    assert http.post("/card/modifystock", {})["errmsg"] == "ok"
    receiver.reply = lambda request: '{"errcode": 40001, "errmsg": "invalid credential"}'
    with pytest.raises(TokenInvalidError):
        http.post("/card/get", {})


def _proxy_environment(monkeypatch: pytest.MonkeyPatch, proxy: str, no_proxy: str = "") -> None:
    """An HTTP egress proxy and nothing else (an empty variable is ignored)."""
    for name, value in (("http_proxy", proxy), ("all_proxy", ""), ("no_proxy", no_proxy)):
        monkeypatch.setenv(name, value)
        monkeypatch.setenv(name.upper(), value)


def test_an_egress_proxy_set_in_the_environment_carries_every_call(
    receiver: PushReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an egress proxy in the environment when the client is built
    _proxy_environment(monkeypatch, receiver.url.rsplit("/", 2)[0])
    receiver.reply = lambda request: '{"errcode": 0, "errmsg": "ok"}'
    http = WeChatHttp("http://api.weixin.invalid", timeout_s=1.0)

    # When it calls WeChat (the environment was read once, at build)
    monkeypatch.delenv("http_proxy")
    monkeypatch.delenv("HTTP_PROXY")
    answers = [http.get("/cgi-bin/token", {"appid": "wx1"}), http.post("/card/get", {})]

    # Then every call went through the proxy
    assert answers == [{"errcode": 0, "errmsg": "ok"}] * 2
    assert [(r.method, r.path) for r in receiver.received] == [("GET", "/cgi-bin/token"), ("POST", "/card/get")]


def test_no_proxy_naming_the_host_bypasses_the_proxy(
    receiver: PushReceiver, closed_port_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _proxy_environment(monkeypatch, closed_port_url.rsplit("/", 1)[0], no_proxy="127.0.0.1")
    receiver.reply = lambda request: '{"errcode": 0}'
    http = WeChatHttp(receiver.url.rsplit("/", 2)[0], timeout_s=1.0)

    assert http.get("/cgi-bin/token") == {"errcode": 0}
    assert len(receiver.received) == 1
