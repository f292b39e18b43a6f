"""Must-show: after an api_ticket rotation no served payload carries a signature of the old
ticket. The fake rotates with no grace, ops force a refresh, the new version fans out to
chunked re-sign messages on real workers, and every outstanding payload of the event passes the
fake's addCard."""

from __future__ import annotations

import dramatiq
from sqlalchemy import select
from typer.testing import CliRunner

from cardpipe.cli import app
from cardpipe.db import session_scope
from cardpipe.runtime import credential_store
from cardpipe.services import resign
from models import OfficialAccount, TicketState
from tests.credentials.conftest import Override, Shop
from wechat.fake import FakeWeChatControl
from workers.broker import broker


def _drain(worker: dramatiq.Worker) -> None:
    broker.join("maintenance")
    worker.join()


def test_every_outstanding_payload_is_re_signed_after_a_rotation(
    shop: Shop, fake: FakeWeChatControl, broker_worker: dramatiq.Worker, override_settings: Override
) -> None:
    override_settings(resign_chunk_tickets=7)
    ids = shop.issued(60)
    served, claimed = ids[20:45], ids[45:]
    shop.set_state(served, TicketState.SERVED)
    for ticket in shop.tickets(claimed):
        assert shop.add_card(ticket)["errMsg"] == "addCard:ok"
    shop.set_state(claimed, TicketState.CLAIMED, confirmed_by_client=True)
    old = {t.id: t for t in shop.tickets()}
    old_version = credential_store().card_ticket(shop.appid).version

    # WeChat rotates the ticket and the old one dies at once; ops force a refresh
    fake.rotate_ticket(shop.appid, grace_s=0)
    result = CliRunner().invoke(app, ["credentials", "refresh", "--force", shop.appid])
    assert result.exit_code == 0, result.output
    assert "rotated" in result.output and "value" not in result.output
    _drain(broker_worker)

    new_version = credential_store().card_ticket(shop.appid).version
    assert new_version == old_version + 1
    with session_scope() as session:
        account_id = session.scalars(select(OfficialAccount.id).where(OfficialAccount.appid == shop.appid)).one()
        assert resign.stale_count(session, account_id, new_version) == 0
    tickets = {t.id: t for t in shop.tickets()}
    outstanding = [i for i in ids if i not in claimed]
    assert all(tickets[i].ticket_version == new_version for i in outstanding)
    assert all(tickets[i].card_ext == old[i].card_ext for i in claimed)
    # The old payloads are dead; every re-signed one is accepted by addCard
    assert "签名错误" in shop.add_card(old[outstanding[0]])["errMsg"]
    for ticket_id in outstanding:
        answer = shop.add_card(tickets[ticket_id])
        assert answer["errMsg"] == "addCard:ok", (ticket_id, answer)
