"""Ops commands: ``cardpipe credentials status|unblock`` show versions, expiries, quota state and
counters, never a token or ticket value."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cardpipe.cli import app
from cardpipe.outbound import AccountBlocked
from cardpipe.runtime import credential_store
from tests.credentials.conftest import Shop
from wechat.fake import FakeWeChatControl


def test_status_shows_a_block_and_unblock_ends_it_without_printing_secrets(shop: Shop, fake: FakeWeChatControl) -> None:
    store = credential_store()
    token, ticket = store.access_token(shop.appid), store.card_ticket(shop.appid).value
    fake.inject_errcode("/card/get", 45009, appid=shop.appid, count=1)
    with pytest.raises(AccountBlocked):
        store.card_api(shop.appid).card_get(shop.card_id)

    runner = CliRunner()
    status = runner.invoke(app, ["credentials", "status", shop.appid])
    assert status.exit_code == 0, status.output
    assert "access_token: version 1" in status.output and "card_ticket: version 1" in status.output
    assert "BLOCKED until" in status.output and "45009" in status.output
    assert "daily_quota: 1" in status.output
    assert token not in status.output and ticket not in status.output

    unblocked = runner.invoke(app, ["credentials", "unblock", shop.appid])
    assert unblocked.exit_code == 0 and "block ended" in unblocked.output
    assert not store.guard.status(shop.appid).blocked
    assert store.card_api(shop.appid).card_get(shop.card_id)
    assert "quota: ok" in runner.invoke(app, ["credentials", "status", shop.appid]).output


def test_refreshing_an_unknown_account_is_a_clear_error(redis_url: str, engine: object) -> None:
    result = CliRunner().invoke(app, ["credentials", "refresh", "wxnosuchaccount"])
    assert result.exit_code == 2
    assert "no official account" in result.output
