"""The credential store as the one writer: refresh ahead of expiry, stable_token per account,
compare-and-expire with one refresh, rotation notifications, and counters."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import update

from cardpipe.credentials import CredentialStore
from cardpipe.db import get_sessionmaker, session_scope
from cardpipe.runtime import credential_store, redis_client, wechat_http
from models import CredentialKind, OfficialAccount
from tests.credentials.conftest import open_shop, token_fetches
from tests.worlds import World
from wechat.errors import WeChatError
from wechat.fake import FakeWeChatControl

TOKEN = CredentialKind.ACCESS_TOKEN
TICKET = CredentialKind.CARD_TICKET


def _use_stable_token(appid: str) -> None:
    with session_scope() as session:
        session.execute(update(OfficialAccount).where(OfficialAccount.appid == appid).values(use_stable_token=True))


def _store(rotations: list[tuple[str, int]]) -> CredentialStore:
    return CredentialStore(
        redis_client(), get_sessionmaker(), wechat_http(), on_ticket_rotated=lambda *args: rotations.append(args)
    )


def test_refresh_ahead_fetches_only_inside_the_margin(cardpipe_world: World, fake: FakeWeChatControl) -> None:
    store = credential_store()
    appid = cardpipe_world.oa_appid
    first = store.refresh(appid, TOKEN, min_validity_s=900)
    assert first.fetched and first.credential.version == 1
    again = store.refresh(appid, TOKEN, min_validity_s=900)
    assert not again.fetched and again.credential.value == first.credential.value
    # Inside the margin (the token lives 7200 s): a new token, a new version
    ahead = store.refresh(appid, TOKEN, min_validity_s=7201)
    assert ahead.fetched and ahead.credential.version == 2
    assert token_fetches(fake, appid) == 2
    assert store.guard.status(appid).counters["token_fetches"] == 2


def test_a_stable_token_is_not_fetched_again_before_wechat_would_renew_it(
    cardpipe_world: World, fake: FakeWeChatControl
) -> None:
    appid = cardpipe_world.oa_appid
    _use_stable_token(appid)
    store = credential_store()
    store.refresh(appid, TOKEN, min_validity_s=900)
    # stable_token answers the same token until its last 300 s: asking earlier is pointless
    assert not store.refresh(appid, TOKEN, min_validity_s=900).fetched
    assert fake.stats()["calls_by_appid"][appid] == {"/cgi-bin/stable_token": 1}


def test_a_stable_token_wechat_refused_but_hands_back_is_force_refreshed_once(
    cardpipe_world: World, fake: FakeWeChatControl
) -> None:
    appid = cardpipe_world.oa_appid
    _use_stable_token(appid)
    shop = open_shop(cardpipe_world, fake)
    store = credential_store()
    api = store.card_api(appid)
    refused = store.access_token(appid)
    # WeChat refuses the token once although stable_token still considers it current
    fake.inject_errcode("/card/get", 40001, appid=appid, count=1)
    assert api.card_get(shop.card_id)
    fresh = store.access_token(appid)
    assert fresh != refused
    quotas = fake.stats()["quotas"][appid]
    assert quotas["/cgi-bin/stable_token#force"]["used"] == 1
    assert quotas["/cgi-bin/stable_token"]["used"] == 3  # first, the same one back, the forced one


def test_compare_and_expire_keeps_a_token_someone_already_replaced(
    cardpipe_world: World, fake: FakeWeChatControl
) -> None:
    store = credential_store()
    appid = cardpipe_world.oa_appid
    old = store.access_token(appid)
    store.refresh(appid, TOKEN, min_validity_s=0, force=True)
    current = store.access_token(appid)
    assert store.invalidate_token(appid, old) is False
    assert store.access_token(appid) == current
    assert token_fetches(fake, appid) == 2


def test_a_rotated_card_ticket_bumps_the_version_and_notifies_once(
    cardpipe_world: World, fake: FakeWeChatControl
) -> None:
    rotations: list[tuple[str, int]] = []
    store = _store(rotations)
    appid = cardpipe_world.oa_appid
    first = store.card_ticket(appid)
    # WeChat answers the same ticket while it is valid: no rotation, same version
    same = store.refresh(appid, TICKET, min_validity_s=0, force=True)
    assert same.fetched and not same.rotated and same.credential.version == first.version
    assert rotations == []

    fake.rotate_ticket(appid, grace_s=0)
    rotated = store.refresh(appid, TICKET, min_validity_s=0, force=True)
    assert rotated.rotated and rotated.credential.version == first.version + 1
    assert rotations == [(appid, first.version + 1)]
    assert store.card_ticket(appid).version == first.version + 1
    assert store.guard.status(appid).counters["ticket_fetches"] == 3


def test_readers_near_a_tickets_end_do_not_turn_into_a_stream_of_getticket_calls(
    cardpipe_world: World, fake: FakeWeChatControl
) -> None:
    appid = cardpipe_world.oa_appid
    later = [0.0]

    def clock() -> float:
        return time.time() + later[0]

    store = CredentialStore(redis_client(), get_sessionmaker(), wechat_http(), reader_min_validity_s=60, clock=clock)
    ticket = store.card_ticket(appid)
    later[0] = 7170.0  # 30 s left: WeChat still answers this same ticket
    for _ in range(20):
        assert store.card_ticket(appid).value == ticket.value
    assert fake.stats()["calls_by_appid"][appid]["/cgi-bin/ticket/getticket"] == 2


def test_readers_refresh_through_the_writer_with_the_configured_validity(
    cardpipe_world: World, fake: FakeWeChatControl
) -> None:
    appid = cardpipe_world.oa_appid
    later = [0.0]
    store = CredentialStore(
        redis_client(),
        get_sessionmaker(),
        wechat_http(),
        reader_min_validity_s=60,
        clock=lambda: time.time() + later[0],
    )
    token = store.access_token(appid)
    later[0] = 7100.0  # 100 s left: readers keep it
    assert store.access_token(appid) == token
    later[0] = 7150.0  # 50 s left: the next reader asks the writer, which fetches once
    assert store.access_token(appid) != token
    assert token_fetches(fake, appid) == 2


def test_an_unknown_account_is_a_lookup_error(redis_url: str, engine: object) -> None:
    with pytest.raises(LookupError):
        credential_store().access_token("wxnosuchaccount")


def test_a_forced_refresh_retried_after_its_ticket_part_failed_forces_only_the_ticket(
    cardpipe_world: World, fake: FakeWeChatControl
) -> None:
    appid = cardpipe_world.oa_appid
    _use_stable_token(appid)
    store = credential_store()
    fake.inject_errcode("/cgi-bin/ticket/getticket", -1, appid=appid, count=100)
    with pytest.raises(WeChatError):
        for kind in (TOKEN, TICKET):
            store.refresh(appid, kind, min_validity_s=900, force=True)
    fake.clear_faults()
    # The operator runs the same forced refresh again: the token it forced a moment ago stays
    token = store.access_token(appid)
    outcomes = [store.refresh(appid, kind, min_validity_s=900, force=True) for kind in (TOKEN, TICKET)]
    assert not outcomes[0].fetched and outcomes[0].credential.value == token
    assert outcomes[1].fetched
    quotas = fake.stats()["quotas"][appid]
    assert quotas["/cgi-bin/stable_token#force"]["used"] == 1
    assert not store.guard.status(appid).minute_pause_s
