"""The refresh actors: ahead of expiry with the configured margin, one fetch however often they
run, and a refresh scheduled right after a card ticket's expiry (WeChat only then hands out the
next one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from cardpipe.runtime import credential_store
from models import CredentialKind
from tests.credentials.conftest import Shop, token_fetches
from tests.worlds import World
from wechat.fake import FakeWeChatControl
from workers.broker import broker
from workers.credentials import refresh_all_credentials, refresh_credentials


def _queued(queue: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in broker.client.hvals(f"dramatiq:{queue}.msgs")]


@pytest.fixture
def short_tickets(fake: FakeWeChatControl) -> Iterator[None]:
    fake.configure(ticket_ttl_s=30)
    yield
    fake.configure(ticket_ttl_s=7200)


def test_refreshing_a_fresh_account_fetches_nothing_new(cardpipe_world: World, fake: FakeWeChatControl) -> None:
    appid = cardpipe_world.oa_appid
    refresh_credentials.fn(appid)
    refresh_credentials.fn(appid)
    assert token_fetches(fake, appid) == 1
    assert fake.stats()["calls_by_appid"][appid]["/cgi-bin/ticket/getticket"] == 1
    assert credential_store().stored(appid, CredentialKind.CARD_TICKET) is not None


def test_a_ticket_near_its_expiry_gets_one_refresh_scheduled_just_after_it(
    cardpipe_world: World, fake: FakeWeChatControl, short_tickets: None
) -> None:
    appid = cardpipe_world.oa_appid
    refresh_credentials.fn(appid)
    refresh_credentials.fn(appid)
    delayed = _queued("maintenance.DQ")
    assert [m["actor_name"] for m in delayed] == ["refresh_credentials"]
    assert delayed[0]["args"] == [appid]
    eta = delayed[0]["options"]["eta"] / 1000
    ticket = credential_store().card_ticket(appid)
    assert ticket.expires_at < eta <= ticket.expires_at + 2


def test_the_fan_out_asks_every_account(shop: Shop, other_shop: Shop) -> None:
    refresh_all_credentials.fn()
    queued = sorted(m["args"][0] for m in _queued("maintenance") if m["actor_name"] == "refresh_credentials")
    assert queued == sorted([shop.appid, other_shop.appid])
