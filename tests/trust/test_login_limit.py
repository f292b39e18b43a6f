"""Logins are limited per client address and per mini program, across api processes (the
counters are in Redis): past the limit a 429 with Retry-After, and no jscode2session call."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import requests

from cardpipe.services.login_limits import LoginLimits, check_login
from tests.claims.conftest import Launch
from tests.live_server import serve
from tests.settings_env import environment
from wechat.fake import FakeWeChatControl


@pytest.fixture
def limited_api(launch: Launch) -> Iterator[list[str]]:
    """Two api servers (two "processes") with a per-client limit of 5 logins a minute."""
    from api import create_app

    with environment(CARDPIPE_LOGIN_LIMIT_PER_CLIENT="5"), serve(create_app()) as one, serve(create_app()) as two:
        yield [one, two]


def jscode_calls(fake: FakeWeChatControl, appid: str) -> int:
    return sum(n for path, n in fake.stats(appid)["calls_by_appid"].get(appid, {}).items() if "jscode2session" in path)


def test_bogus_logins_past_the_limit_are_429_and_cost_wechat_nothing(
    launch: Launch, limited_api: list[str], fake: FakeWeChatControl
) -> None:
    appid = launch.world.mp_appid
    before = jscode_calls(fake, appid)

    answers = [
        requests.post(f"{limited_api[n % 2]}/v1/sessions", json={"code": f"bogus-{n}", "appid": appid}, timeout=10)
        for n in range(8)
    ]

    assert [a.status_code for a in answers] == [401] * 5 + [429] * 3
    refused = answers[-1]
    assert 1 <= int(refused.headers["retry-after"]) <= 60 and "address" in refused.json()["detail"]
    assert jscode_calls(fake, appid) - before == 5


def test_the_per_appid_limit_counts_every_address(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    limits = LoginLimits(per_client=100, per_appid=3, window_s=60)
    verdicts = [check_login(client, limits, client=f"10.0.0.{n}", appid="wxlimited01") for n in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert "mini program" in verdicts[-1].reason


def test_with_redis_away_logins_go_on() -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    verdict = check_login(unreachable, LoginLimits(1, 1, 60), client="10.0.0.1", appid="wxlimited01")
    assert verdict.allowed
