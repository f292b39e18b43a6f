"""Registration takes only appids, and an account WeChat refuses for its configuration backs
off: it is shown as such in its status and on ``/ops``, the scheduler's ticks leave it alone,
and one log line is written per change of state instead of a traceback a minute."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import pytest
import requests
from sqlalchemy import func, select

from cardpipe.db import session_scope
from cardpipe.services import accounts
from models import MiniProgram, OfficialAccount
from tests.claims.conftest import Launch
from tests.conftest import ADMIN_TOKEN
from tests.worlds import MakeWorld
from wechat.fake import FakeWeChatControl
from workers.credentials import refresh_all_credentials, refresh_credentials
from workers.resign import resign_account

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
OA_BODY: dict[str, Any] = {"app_secret": "a-secret-000", "server_token": "token-123"}


def wechat_calls(fake: FakeWeChatControl, appid: str) -> int:
    return sum(fake.stats(appid)["calls_by_appid"].get(appid, {}).values())


def account_count() -> int:
    with session_scope() as session:
        return (session.scalar(select(func.count()).select_from(OfficialAccount)) or 0) + (
            session.scalar(select(func.count()).select_from(MiniProgram)) or 0
        )


@pytest.mark.parametrize("appid", ["0", "ç", "wx\x01\x02abcdef", "wxabc", "wx" + "a" * 40, "wxabc def12"])
def test_a_registration_under_something_that_is_not_an_appid_is_refused(launch: Launch, appid: str) -> None:
    before = account_count()
    quoted = quote(appid, safe="")
    oa = requests.put(f"{launch.api}/v1/admin/official-accounts/{quoted}", json=OA_BODY, headers=ADMIN, timeout=10)
    mp_body = {"app_secret": "a-secret-000", "official_account_appid": launch.world.oa_appid}
    mp = requests.put(f"{launch.api}/v1/admin/mini-programs/{quoted}", json=mp_body, headers=ADMIN, timeout=10)
    assert (oa.status_code, mp.status_code) == (422, 422)
    assert account_count() == before


def test_the_service_refuses_a_bad_appid_too(launch: Launch) -> None:
    with pytest.raises(accounts.AccountError), session_scope() as session:
        accounts.upsert_official_account(session, accounts.OfficialAccountInput("0", "secret-123", "tok"))


def test_an_account_with_a_wrong_secret_backs_off_and_says_so(
    launch: Launch, make_world: MakeWorld, fake: FakeWeChatControl, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an account registered with the wrong AppSecret (WeChat: 40125 / 40001 on the token endpoint)
    world = make_world()
    body: dict[str, Any] = {"app_secret": "not-the-secret", "server_token": "token-123", "use_stable_token": False}
    assert (
        requests.put(
            f"{launch.api}/v1/admin/official-accounts/{world.oa_appid}", json=body, headers=ADMIN, timeout=10
        ).status_code
        == 200
    )
    status_url = f"{launch.api}/v1/admin/official-accounts/{world.oa_appid}/status"

    # When the scheduler's refresh runs for it three times
    with caplog.at_level(logging.INFO):
        calls_before = wechat_calls(fake, world.oa_appid)
        for _ in range(3):
            refresh_credentials(world.oa_appid)
            resign_account(world.oa_appid)
        calls_after = wechat_calls(fake, world.oa_appid)

    # Then WeChat was asked once, the state is shown, logged once, without a traceback
    assert calls_after - calls_before == 1
    status = requests.get(status_url, headers=ADMIN, timeout=10).json()
    assert status["configuration_error"]["failures"] == 1 and status["configuration_error"]["retry_at"]
    lines = [r for r in caplog.records if world.oa_appid in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and lines[0].exc_info is None
    refresh_all_credentials()  # skips the account: nothing asked of WeChat
    assert wechat_calls(fake, world.oa_appid) == calls_after

    # And registering the right secret clears the state; the next refresh works
    body["app_secret"] = world.oa_secret
    requests.put(f"{launch.api}/v1/admin/official-accounts/{world.oa_appid}", json=body, headers=ADMIN, timeout=10)
    refresh_credentials(world.oa_appid)
    status = requests.get(status_url, headers=ADMIN, timeout=10).json()
    assert status["configuration_error"] is None and status["access_token"] is not None


def test_ops_shows_the_configuration_error(launch: Launch) -> None:
    with session_scope() as session:
        account = session.scalars(select(OfficialAccount).where(OfficialAccount.appid == launch.world.oa_appid)).one()
        account.config_error = "errcode 40164: invalid ip, not in whitelist"
    answer = requests.get(f"{launch.api}/v1/events/{launch.event_id}/stats", headers=ADMIN, timeout=10)
    assert answer.json()["config_error"] == "errcode 40164: invalid ip, not in whitelist"
