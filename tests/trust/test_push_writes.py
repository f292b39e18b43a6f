"""A push is stored as its replay guard's pair and its inbox row, written together (on PostgreSQL
in one statement, on the demo's SQLite in one transaction): a fresh pair stores the row, the same
pair with the same body is a redelivery, the same pair with another body is refused and writes
nothing, and the inbox's dedupe key still answers a push stored under another pair."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from cardpipe.db import make_engine
from cardpipe.migrate import upgrade
from cardpipe.services import push_guard, push_writes
from models import InboxItem, OfficialAccount, PushNonce
from tests.waiting import wait_until

TIMESTAMP = 1_700_000_000


@pytest.fixture(params=["postgresql", "sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, int]]:
    """An engine on a migrated database of either kind, and an official account in it."""
    if request.param == "postgresql":
        engine: Engine = request.getfixturevalue("engine")
    else:
        url = f"sqlite:///{tmp_path}/demo.db"
        upgrade(url)
        engine = make_engine(url)
    with engine.begin() as connection:
        account_id = connection.execute(
            OfficialAccount.__table__.insert()
            .values(appid="wxpushwrites1", name="", app_secret="s", server_token="t", use_stable_token=False)
            .returning(OfficialAccount.__table__.c.id)
        ).scalar_one()
    yield engine, account_id
    if request.param == "sqlite":
        engine.dispose()


def store(engine: Engine, account_id: int, *, nonce: str, body: bytes, dedupe_key: str) -> int | None:
    return push_writes.store(
        engine,
        official_account_id=account_id,
        timestamp=TIMESTAMP,
        nonce=nonce,
        body=body,
        kind="user_get_card",
        dedupe_key=dedupe_key,
        payload=body.decode(),
    )


def counts(engine: Engine) -> tuple[int, int]:
    """(recorded pairs, inbox rows)."""
    with engine.connect() as connection:
        pairs = connection.execute(select(func.count()).select_from(PushNonce)).scalar_one()
        rows = connection.execute(select(func.count()).select_from(InboxItem)).scalar_one()
    return pairs, rows


def test_a_fresh_pair_stores_the_row_and_its_redelivery_stores_nothing(world: tuple[Engine, int]) -> None:
    engine, account_id = world

    first = store(engine, account_id, nonce="n-1", body=b"<xml>a</xml>", dedupe_key="k-a")
    again = store(engine, account_id, nonce="n-1", body=b"<xml>a</xml>", dedupe_key="k-a")

    assert first is not None and again is None
    assert counts(engine) == (1, 1)
    with engine.connect() as connection:
        row = connection.execute(select(InboxItem).where(InboxItem.id == first)).one()
    assert (row.source, row.kind, row.payload, row.official_account_id, row.attempts) == (
        "wechat",
        "user_get_card",
        "<xml>a</xml>",
        account_id,
        0,
    )


def test_the_pair_with_another_body_is_refused_and_writes_nothing(world: tuple[Engine, int]) -> None:
    engine, account_id = world
    store(engine, account_id, nonce="n-1", body=b"<xml>a</xml>", dedupe_key="k-a")

    with pytest.raises(push_guard.ReplayedPush):
        store(engine, account_id, nonce="n-1", body=b"<xml>forged</xml>", dedupe_key="k-forged")

    assert counts(engine) == (1, 1)


def test_a_push_under_another_pair_is_answered_by_the_inbox_dedupe(world: tuple[Engine, int]) -> None:
    engine, account_id = world
    store(engine, account_id, nonce="n-1", body=b"<xml>a</xml>", dedupe_key="k-a")

    again = store(engine, account_id, nonce="n-2", body=b"<xml>a</xml>", dedupe_key="k-a")

    assert again is None
    assert counts(engine) == (2, 1)


def test_a_redelivery_of_a_pair_recorded_without_its_row_stores_the_row(world: tuple[Engine, int]) -> None:
    # Given a pair recorded with this body but no inbox row (the first delivery's row was not written)
    engine, account_id = world
    with engine.begin() as connection:
        push_guard.check_not_replayed(
            connection, official_account_id=account_id, timestamp=TIMESTAMP, nonce="n-1", body=b"<xml>a</xml>"
        )

    # When WeChat's retry arrives, it is stored
    assert store(engine, account_id, nonce="n-1", body=b"<xml>a</xml>", dedupe_key="k-a") is not None
    assert counts(engine) == (1, 1)


@pytest.mark.parametrize(("body", "stored"), [(b"<xml>a</xml>", True), (b"<xml>forged</xml>", False)])
def test_a_pair_committed_while_the_statement_waited_for_it_is_decided_on_its_body(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, body: bytes, stored: bool
) -> None:
    # Given a transaction that recorded the pair (body "a") and has not committed yet
    with engine.begin() as connection:
        account_id = connection.execute(
            OfficialAccount.__table__.insert()
            .values(appid="wxpushwrites2", name="", app_secret="s", server_token="t", use_stable_token=False)
            .returning(OfficialAccount.__table__.c.id)
        ).scalar_one()
    outcome: list[object] = []

    def deliver() -> None:
        try:
            outcome.append(store(engine, account_id, nonce="n-1", body=body, dedupe_key="k-b"))
        except push_guard.ReplayedPush as exc:
            outcome.append(exc)

    with engine.connect() as holder:
        transaction = holder.begin()
        push_guard.check_not_replayed(
            holder, official_account_id=account_id, timestamp=TIMESTAMP, nonce="n-1", body=b"<xml>a</xml>"
        )
        # When a push with the same pair waits for it, and it commits
        checked_again: list[int] = []
        check_not_replayed = push_guard.check_not_replayed

        def counted(*args: Any, **kwargs: Any) -> None:
            checked_again.append(1)
            check_not_replayed(*args, **kwargs)

        monkeypatch.setattr(push_guard, "check_not_replayed", counted)
        thread = threading.Thread(target=deliver)
        thread.start()
        wait_until(lambda: _waiting_for_a_lock(engine), what="the push waits for the recorded pair")
        transaction.commit()
        thread.join(timeout=10)

    # Then the push, whose statement did not see that pair, checks it again: stored with the same
    # body, refused otherwise
    assert checked_again
    (result,) = outcome
    assert isinstance(result, int) if stored else isinstance(result, push_guard.ReplayedPush)
    assert counts(engine) == (1, 1 if stored else 0)


def _waiting_for_a_lock(engine: Engine) -> bool:
    with engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return bool(waiting)
