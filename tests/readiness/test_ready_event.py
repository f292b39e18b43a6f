"""A whole event set up as the runbook says passes every item, and checking it again costs WeChat
nothing but one card/get and changes nothing."""

from __future__ import annotations

from sqlalchemy import text

from cardpipe.db import session_scope
from tests.readiness.conftest import Setup


def test_an_event_set_up_as_the_runbook_says_is_ready(ready: Setup) -> None:
    report = ready.check()
    assert report.ready, [i for i in report.items if i.status != "ok"]
    assert {i.key for i in report.items} >= {
        "oa.credentials",
        "oa.card_api",
        "oa.quota",
        "mp.secret",
        "mp.open_platform",
        "server.pushes",
        "server.safe_mode",
        "card.exists",
        "card.audit",
        "card.stock",
        "card.get_limit",
        "card.custom_code",
        "card.sharing",
        "card.dates",
        "card.mp_jump",
        "preissue.orders",
        "preissue.signatures",
        "preissue.queues",
        "system.workers",
        "system.scheduler",
        "system.credentials",
    }
    assert all(i.status == "ok" for i in report.items), [i for i in report.items if i.status != "ok"]


def _snapshot(ready: Setup) -> tuple[object, ...]:
    with session_scope() as session:
        rows = tuple(
            session.execute(text(f"SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {table} t")).scalar()
            for table in ("events", "orders", "tickets", "credentials", "official_accounts", "inbox")
        )
    card = ready.fake.card(ready.card_id)
    return rows, card["status"], card["stock"], len(card["user_cards"])


def test_checking_again_spends_no_quota_and_changes_nothing(ready: Setup) -> None:
    ready.check()
    before = ready.fake.stats()["calls_by_appid"]
    state = _snapshot(ready)
    report = ready.check()
    after = ready.fake.stats()["calls_by_appid"]
    assert report.ready
    spent = {
        appid: {
            ep: n - before.get(appid, {}).get(ep, 0) for ep, n in calls.items() if n != before.get(appid, {}).get(ep)
        }
        for appid, calls in after.items()
    }
    spent = {appid: calls for appid, calls in spent.items() if calls}
    # The card's stock and settings change under WeChat's hands: one card/get. Tokens, tickets,
    # the login probe and the custom-code probe are not asked again.
    assert spent == {ready.world.oa_appid: {"/card/get": 1}}
    assert _snapshot(ready) == state
