"""The two readiness checks: of an official account (with its mini programs and server URL) and
of an event (its account and mini program, its card, its pre-issue), both with the running system.

Order matters once: the credential expiries are read before anything reads the credentials,
because a reader refreshes a dying token (through the one writer, never forced) and the report
must show the state it found.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cardpipe.services.events import UnknownEvent
from cardpipe.services.readiness import account, card, pipeline
from cardpipe.services.readiness.ports import ReadinessPorts
from cardpipe.services.readiness.report import Item, Report, Section, Status
from models import Event, MiniProgram, OfficialAccount


class UnknownAccount(LookupError):
    pass


def _account_items(session: Session, ports: ReadinessPorts, oa: OfficialAccount) -> tuple[list[Item], bool]:
    """The OA's own items and whether its card API works."""
    fresh = pipeline.credentials_fresh(ports, oa.appid)
    quota = account.oa_quota(ports, oa.appid)
    credentials = account.oa_credentials(ports, oa.appid)
    card_api = account.oa_card_api(ports, oa.appid, credentials.status == Status.OK)
    items = [credentials, card_api, quota]
    items += [account.server_pushes(session, ports, oa), account.server_safe_mode(session, ports, oa)]
    return [*items, fresh], card_api.status == Status.OK


def _system_items(ports: ReadinessPorts) -> list[Item]:
    return [pipeline.workers_alive(ports), pipeline.scheduler_leader(ports)]


def _order(items: list[Item]) -> list[Item]:
    """By section, in ``Section``'s order; a stable sort keeps each section's own order."""
    sections = list(Section)
    return sorted(items, key=lambda item: sections.index(item.section))


def check_account(session: Session, ports: ReadinessPorts, oa_appid: str) -> Report:
    oa = session.scalars(select(OfficialAccount).where(OfficialAccount.appid == oa_appid)).one_or_none()
    if oa is None:
        raise UnknownAccount(f"no official account {oa_appid!r}")
    items, _ = _account_items(session, ports, oa)
    programs = session.scalars(
        select(MiniProgram).where(MiniProgram.official_account_id == oa.id).order_by(MiniProgram.id)
    )
    for program in programs:
        items += [account.mp_secret(ports, program), account.mp_open_platform(session, ports, program, None)]
    return Report(scope=f"official account {oa.appid}", items=_order(items + _system_items(ports)))


def check_event(session: Session, ports: ReadinessPorts, event_id: int) -> Report:
    event = session.get(Event, event_id)
    if event is None:
        raise UnknownEvent(f"no event {event_id}")
    oa = session.get_one(OfficialAccount, event.official_account_id)
    program = session.get_one(MiniProgram, event.mini_program_id)
    items, api_ok = _account_items(session, ports, oa)
    items += [account.mp_secret(ports, program), account.mp_open_platform(session, ports, program, event.id)]
    items += card.check_card(session, ports, event, oa.appid, api_ok)
    items += [
        pipeline.preissue_orders(event),
        pipeline.preissue_signatures(session, ports, event, oa.appid),
        pipeline.queues_clear(ports),
    ]
    return Report(scope=f"event {event.id} {event.name}", items=_order(items + _system_items(ports)))


def check_all(session: Session, ports: ReadinessPorts) -> list[Report]:
    """Every event, and every official account that has none."""
    reports = [
        check_event(session, ports, event_id) for event_id in session.scalars(select(Event.id).order_by(Event.id))
    ]
    with_events = select(Event.official_account_id)
    lonely = session.scalars(
        select(OfficialAccount.appid).where(OfficialAccount.id.not_in(with_events)).order_by(OfficialAccount.id)
    )
    return reports + [check_account(session, ports, appid) for appid in lonely]
