"""Official account, Mini Program and server-URL items: each failing for its reason with the fake
set into that failure, then passing after the organiser's remedy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests
from sqlalchemy import select, update

from cardpipe.db import session_scope
from cardpipe.runtime import credential_store, redis_client
from cardpipe.services import accounts, pushes
from cardpipe.services.readiness.report import Status
from models import Credential, CredentialKind, MiniProgram, OfficialAccount
from tests.readiness.conftest import Setup


def _expire_token(setup: Setup) -> None:
    """The stored token dies (as at the end of its life): the next reader must fetch one."""
    store = credential_store()
    store.invalidate_token(setup.world.oa_appid, store.access_token(setup.world.oa_appid))


def test_ip_whitelist_names_the_address_wechat_reported(ready: Setup) -> None:
    oa = ready.world.oa_appid
    ready.fake.set_ip_whitelist(oa, ["203.0.113.7"])
    _expire_token(ready)
    item = ready.item("oa.credentials")
    assert item.status == Status.FAILING
    assert "127.0.0.1" in item.detail
    assert item.remedy is not None and "add 127.0.0.1 to the Official Account's IP whitelist" in item.remedy
    assert "IP白名单" in item.remedy

    ready.fake.set_ip_whitelist(oa, ["203.0.113.7", "127.0.0.1"])
    assert ready.item("oa.credentials").status == Status.OK


def test_a_wrong_appsecret(ready: Setup) -> None:
    w = ready.world
    ready.fake.register_oa(w.oa_appid, "secret-reset-at-wechat", w.server_token, original_id=w.original_id)
    _expire_token(ready)
    item = ready.item("oa.credentials")
    assert item.status == Status.FAILING and "AppSecret" in item.detail and "AppSecret" in (item.remedy or "")

    with session_scope() as session:
        accounts.upsert_official_account(
            session,
            accounts.OfficialAccountInput(
                appid=w.oa_appid,
                app_secret="secret-reset-at-wechat",
                server_token=w.server_token,
                encoding_aes_key=w.aes_key,
                original_id=w.original_id,
                use_stable_token=False,
            ),
        )
    assert ready.item("oa.credentials").status == Status.OK


def test_an_appid_wechat_does_not_know(ready: Setup) -> None:
    ready.fake.inject_errcode("/cgi-bin/token", 40013, appid=ready.world.oa_appid, count=1)
    _expire_token(ready)
    item = ready.item("oa.credentials")
    assert item.status == Status.FAILING and "40013" in item.detail and "AppID" in (item.remedy or "")
    assert ready.item("oa.credentials").status == Status.OK


def test_no_card_feature(ready: Setup) -> None:
    oa = ready.world.oa_appid
    ready.fake.set_card_permissions(oa, card_feature=False)
    report = ready.check()
    assert report.item("card.exists").status == Status.FAILING and "卡券功能" in (
        report.item("card.exists").remedy or ""
    )
    _expire_ticket(oa)
    item = ready.item("oa.card_api")
    assert item.status == Status.FAILING and "48001" in item.detail and "卡券功能" in (item.remedy or "")

    ready.fake.set_card_permissions(oa, card_feature=True)
    report = ready.check()
    assert report.item("oa.card_api").status == Status.OK and report.item("card.exists").status == Status.OK


def _expire_ticket(appid: str) -> None:
    """The held card ticket reaches the end of its life: the next reader must fetch one."""
    with session_scope() as session:
        account_id = session.scalar(select(OfficialAccount.id).where(OfficialAccount.appid == appid))
        session.execute(
            update(Credential)
            .where(Credential.official_account_id == account_id, Credential.kind == CredentialKind.CARD_TICKET)
            .values(expires_at=datetime.now(UTC))
        )
    redis_client().delete(f"cardpipe:credential:{appid}:{CredentialKind.CARD_TICKET}")


def test_a_blocked_daily_quota(ready: Setup) -> None:
    oa = ready.world.oa_appid
    ready.fake.inject_errcode("/card/get", 45009, appid=oa, count=1)
    first = ready.check()
    assert first.item("card.exists").status == Status.WARNING
    item = ready.item("oa.quota")
    assert (
        item.status == Status.FAILING and "45009" in item.detail and f"credentials unblock {oa}" in (item.remedy or "")
    )

    credential_store().guard.unblock(oa)
    assert ready.check().ready


def test_a_wrong_mini_program_secret(ready: Setup) -> None:
    mp = ready.world.mp_appid
    with session_scope() as session:
        session.execute(update(MiniProgram).where(MiniProgram.appid == mp).values(app_secret="not-the-secret"))
    item = ready.item("mp.secret")
    assert item.status == Status.FAILING and "40125" in item.detail and "开发设置" in (item.remedy or "")

    with session_scope() as session:
        accounts.upsert_mini_program(session, mp, ready.world.mp_secret, ready.world.oa_appid)
    assert ready.item("mp.secret").status == Status.OK


def test_a_mini_program_not_bound_to_the_open_platform(setup: Setup) -> None:
    w = setup.world
    setup.fake.register_mp(w.mp_appid, w.mp_secret, None)
    setup.create_event()
    setup.audit()
    setup.import_orders()
    setup.preissue()
    item = setup.item("mp.open_platform")
    assert item.status == Status.WARNING and "log in once with a tester" in (item.remedy or "")

    assert setup.login().status_code == 200
    item = setup.item("mp.open_platform")
    assert item.status == Status.FAILING and "without a unionid" in item.detail
    assert "open.weixin.qq.com" in (item.remedy or "")

    setup.fake.register_mp(w.mp_appid, w.mp_secret, w.oa_appid)
    assert setup.login().status_code == 200
    assert setup.item("mp.open_platform").status == Status.OK


def test_no_push_received_then_the_url_check(setup: Setup) -> None:
    w = setup.world
    setup.fake.register_oa(w.oa_appid, w.oa_secret, w.server_token, original_id=w.original_id)
    setup.create_event()
    setup.fake.review_card(setup.card_id)
    item = setup.item("server.pushes")
    assert item.status == Status.FAILING and "nothing received" in item.detail
    assert f"/wechat/{w.oa_appid}/events" in (item.remedy or "") and "服务器配置" in (item.remedy or "")

    setup.point_pushes_at_the_app()
    assert setup.fake.verify_url(w.oa_appid)["ok"]
    item = setup.item("server.pushes")
    assert item.status == Status.OK and "URL check" in item.detail


def test_safe_mode_pushes_without_the_key(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pushes, "ACCOUNT_CACHE_TTL_S", 0.0)  # the api caches accounts 30 s
    w = setup.world
    with session_scope() as session:
        accounts.upsert_official_account(
            session,
            accounts.OfficialAccountInput(
                appid=w.oa_appid,
                app_secret=w.oa_secret,
                server_token=w.server_token,
                original_id=w.original_id,
                use_stable_token=False,
            ),
        )
    setup.point_pushes_at_the_app(safe_mode=True)
    setup.create_event()
    setup.fake.review_card(setup.card_id)
    setup.fake.wait_for_pushes(w.oa_appid, 1)
    item = setup.item("server.safe_mode")
    assert item.status == Status.FAILING and "EncodingAESKey" in item.detail
    assert "消息加解密密钥" in (item.remedy or "")

    with session_scope() as session:
        accounts.upsert_official_account(
            session,
            accounts.OfficialAccountInput(
                appid=w.oa_appid,
                app_secret=w.oa_secret,
                server_token=w.server_token,
                encoding_aes_key=w.aes_key,
                original_id=w.original_id,
                use_stable_token=False,
            ),
        )
    setup.audit()
    item = setup.item("server.safe_mode")
    assert item.status == Status.OK and "EncodingAESKey stored" in item.detail


def test_a_stable_token_account_is_never_force_refreshed(ready: Setup) -> None:
    w = ready.world
    with session_scope() as session:
        accounts.upsert_official_account(
            session,
            accounts.OfficialAccountInput(
                appid=w.oa_appid,
                app_secret=w.oa_secret,
                server_token=w.server_token,
                encoding_aes_key=w.aes_key,
                original_id=w.original_id,
                use_stable_token=True,
            ),
        )
    _expire_token(ready)
    for _ in range(3):
        assert ready.item("oa.credentials").status == Status.OK
    quotas = ready.fake.stats()["quotas"][w.oa_appid]
    assert quotas["/cgi-bin/stable_token"]["used"] == 1
    assert "/cgi-bin/stable_token#force" not in quotas


def test_a_push_with_a_bad_signature_is_a_warning_until_wechat_is_heard_again(ready: Setup) -> None:
    w = ready.world
    query = {"signature": "0" * 40, "timestamp": "1700000000", "nonce": "1", "echostr": "x"}
    refused = requests.get(f"{ready.api}/wechat/{w.oa_appid}/events", params=query, timeout=10)
    assert refused.status_code == 403
    item = ready.item("server.safe_mode")
    assert item.status == Status.WARNING and "signature does not match" in item.detail
    assert "令牌(Token)" in (item.remedy or "")
    assert ready.check().ready  # anyone can send a bad signature: not a reason to hold the launch

    assert ready.fake.verify_url(w.oa_appid)["ok"]
    assert ready.item("server.safe_mode").status == Status.OK
