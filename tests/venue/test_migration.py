"""Events made before check-in lists existed get their default single-use list from the
migration, and single-use scans recorded before keep their meaning."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from cardpipe.migrate import upgrade


def test_the_migration_gives_existing_events_a_default_single_use_list(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    upgrade(url, "0001")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO official_accounts (id, appid, name, app_secret, server_token, use_stable_token,"
                " created_at) VALUES (1, 'wxoa', 'oa', 'x', 'x', 0, '2026-01-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO mini_programs (id, appid, name, app_secret, official_account_id, created_at)"
                " VALUES (1, 'wxmp', 'mp', 'x', 1, '2026-01-01')"
            )
        )
        for event_id in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO events (id, name, official_account_id, mini_program_id, card_type, card_status,"
                    " code_mode, code_length, code_alphabet, state, orders_total, tickets_total, orders_complete,"
                    " tickets_issued, created_at) VALUES (:id, 'e', 1, 1, 'MEETING_TICKET', 'x', 'custom', 12,"
                    " 'ABC', 'draft', 0, 0, 0, 0, '2026-01-01')"
                ),
                {"id": event_id},
            )
        conn.execute(
            text(
                "INSERT INTO redemptions (nonce, code, event_id, gate, result, consume_sync, consume_attempts,"
                " consume_in_doubt, created_at) VALUES ('n1', 'C', 1, 'g', 'ok', 'done', 1, 0, '2026-01-01')"
            )
        )

    upgrade(url)

    with engine.connect() as conn:
        lists = conn.execute(
            text("SELECT event_id, name, policy, is_default, length(snapshot_key) FROM checkin_lists ORDER BY event_id")
        ).all()
        scan = conn.execute(text("SELECT direction, single_use, offline FROM redemptions")).one()
        timezone = conn.execute(text("SELECT DISTINCT timezone FROM events")).scalar_one()
    engine.dispose()
    assert lists == [(1, "default", "single", 1, 64), (2, "default", "single", 1, 64)]
    assert tuple(scan) == ("entry", 1, 0)
    assert timezone == "Asia/Shanghai"
