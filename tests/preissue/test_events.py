"""Events: bound to an existing ticket card or given one through card/create, with a code policy."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from cardpipe.cli import app
from cardpipe.db import session_scope
from cardpipe.runtime import credential_store
from cardpipe.services import events
from models import CodeMode, Event
from tests.preissue.conftest import Organiser, base_info, card_spec, event_row


def _create(organiser: Organiser, **fields: Any) -> Event:
    """An event named Expo of the organiser's accounts, with ``fields`` set over those."""
    data = replace(
        events.EventInput(name="Expo", oa_appid=organiser.world.oa_appid, mp_appid=organiser.world.mp_appid), **fields
    )
    with session_scope() as session:
        return events.create_event(session, data, card_api=credential_store().card_api(organiser.world.oa_appid))


def _card_info(organiser: Organiser, card_id: str) -> dict[str, Any]:
    card = credential_store().card_api(organiser.world.oa_appid).card_get(card_id)
    return dict(card[str(card["card_type"]).lower()]["base_info"])


def test_a_new_card_is_created_for_custom_codes_without_gifting(organiser: Organiser) -> None:
    event = _create(organiser, card_spec=card_spec(), code_policy=events.CodePolicy(length=10))

    assert event.card_id and event.card_type == "MEETING_TICKET" and event.code_mode == CodeMode.CUSTOM
    assert (event.code_length, event.state, event.card_status) == (10, "draft", "CARD_STATUS_NOT_VERIFY")
    info = _card_info(organiser, event.card_id)
    assert info["use_custom_code"] is True and "get_custom_code_mode" not in info
    assert info["can_give_friend"] is False and info["can_share"] is False
    assert info["code_type"] == "CODE_TYPE_QRCODE" and info["sku"]["quantity"] == 1


def test_a_deposit_mode_card_starts_with_no_stock(organiser: Organiser) -> None:
    spec = events.CardSpec(card_type="SCENIC_TICKET", base_info=base_info(sku={"quantity": 500}), ticket_class="adult")

    event = _create(organiser, card_spec=spec, code_mode=CodeMode.DEPOSIT)

    assert event.code_mode == CodeMode.DEPOSIT and event.card_type == "SCENIC_TICKET"
    info = _card_info(organiser, event.card_id or "")
    assert info["get_custom_code_mode"] == "GET_CUSTOM_CODE_MODE_DEPOSIT"
    assert info["sku"]["quantity"] == 0


def test_gifting_can_be_allowed_explicitly(organiser: Organiser) -> None:
    event = _create(organiser, card_spec=card_spec(can_give_friend=True))
    assert _card_info(organiser, event.card_id or "")["can_give_friend"] is True


def test_an_existing_ticket_card_is_bound_with_its_mode_and_status(organiser: Organiser) -> None:
    card_id = organiser.world.create_card(deposit=True, quantity=0)

    event = _create(organiser, card_id=card_id)

    assert (event.card_id, event.code_mode, event.card_status) == (card_id, CodeMode.DEPOSIT, "CARD_STATUS_VERIFY_OK")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"card_id": "pNoSuchCard"}, "not usable by this official account"),
        ({"card_spec": card_spec(bind_openid=True)}, "openid-bound cards are not supported"),
        ({"card_spec": events.CardSpec(base_info=base_info())}, "needs meeting_detail"),
        ({"card_spec": card_spec(color="Purple")}, "WeChat refused the card (errcode 40097"),
        ({}, "either card_id"),
        ({"card_spec": card_spec(), "code_policy": events.CodePolicy(alphabet="0123456789ABCDEF")}, "ambiguous"),
        ({"card_spec": card_spec(), "code_policy": events.CodePolicy(length=21)}, "code length must be 6..20"),
        ({"card_spec": card_spec(), "code_policy": events.CodePolicy(length=6, alphabet="ABC")}, "under 10^9"),
    ],
)
def test_unusable_events_are_refused_with_a_reason(
    organiser: Organiser, fields: dict[str, object], reason: str
) -> None:
    with pytest.raises(events.EventError, match=None) as refused:
        _create(organiser, **fields)
    assert reason in str(refused.value)
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 0


def test_an_ambiguous_alphabet_is_allowed_when_asked(organiser: Organiser) -> None:
    policy = events.CodePolicy(length=12, alphabet="0123456789", allow_ambiguous=True)
    assert _create(organiser, card_spec=card_spec(), code_policy=policy).code_alphabet == "0123456789"


def test_a_card_that_lets_wechat_pick_codes_is_refused(organiser: Organiser) -> None:
    card_id = organiser.world.create_card(use_custom_code=False)
    with pytest.raises(events.EventError, match="lets WeChat pick the codes"):
        _create(organiser, card_id=card_id)


def test_a_card_belongs_to_one_event(organiser: Organiser) -> None:
    card_id = organiser.world.create_card()
    _create(organiser, card_id=card_id)
    with pytest.raises(events.EventError, match="already belongs to another event"):
        _create(organiser, card_id=card_id)


def test_the_mini_program_must_be_bound_to_the_official_account(organiser: Organiser) -> None:
    from cardpipe.services import accounts

    with session_scope() as session:
        accounts.upsert_official_account(session, accounts.OfficialAccountInput("wxotheroa01", "s3cret-other", "tok"))
    with pytest.raises(events.EventError, match="is not bound to official account"):
        _create(organiser, oa_appid="wxotheroa01", card_spec=card_spec())


def test_cli_creates_an_event_from_a_card_spec(organiser: Organiser, tmp_path: Path) -> None:
    spec = tmp_path / "card.json"
    spec.write_text(json.dumps(card_spec().model_dump(exclude_none=True)))

    result = CliRunner().invoke(
        app,
        [
            "event", "create", "--name", "Gala", "--oa", organiser.world.oa_appid, "--mp", organiser.world.mp_appid,
            "--card-spec", str(spec), "--code-length", "14", "--launch-at", "2026-12-31T20:00:00+08:00",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    event_id = int(result.output.split()[1])
    with session_scope() as session:
        event = event_row(session, event_id)
        assert event.launch_at is not None
        assert (event.name, event.code_length, event.launch_at.isoformat()) == (
            "Gala",
            14,
            "2026-12-31T12:00:00+00:00",
        )


def test_cli_refuses_a_launch_time_without_offset(organiser: Organiser) -> None:
    result = CliRunner().invoke(
        app,
        ["event", "create", "--name", "x", "--oa", organiser.world.oa_appid, "--mp", organiser.world.mp_appid,
         "--card-id", "pX", "--launch-at", "2026-12-31T20:00:00"],
    )  # fmt: skip
    assert result.exit_code == 2 and "needs a UTC offset" in result.output
