"""Inputs that could turn into 500s: ids past PostgreSQL's BIGINT on every id path and body field,
deeply nested JSON lines in an import, a safe-mode payload that decrypts to bytes that are not
UTF-8. Each is a 4xx with a reason, and the connection stays usable."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from sqlalchemy import update

from cardpipe.db import session_scope
from cardpipe.services import pushes
from models import OfficialAccount
from tests.claims.conftest import Launch
from tests.conftest import ADMIN_TOKEN, GATE_TOKEN
from wechat.crypto import _pad
from wechat.fake import push_crypto

TOO_BIG = 2**63
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/events/{id}/stats"),
        ("POST", "/v1/tickets/{id}/revoke"),
        ("GET", "/v1/events/{id}/redemptions"),
        ("GET", "/v1/admin/events/{id}"),
        ("POST", "/v1/admin/events/{id}/orders"),
        ("POST", "/v1/admin/events/{id}/preissue"),
        ("GET", "/v1/admin/events/{id}/progress"),
    ],
)
def test_an_id_past_bigint_is_a_4xx(launch: Launch, method: str, path: str) -> None:
    with requests.Session() as http:
        answer = http.request(
            method,
            launch.api + path.format(id=TOO_BIG),
            headers={**ADMIN, "Content-Type": "application/x-ndjson"},
            data=b"",
            timeout=10,
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"]
        assert http.get(f"{launch.api}/healthz", timeout=10).status_code == 200


def test_a_gate_event_id_past_bigint_is_a_4xx(launch: Launch) -> None:
    scan: dict[str, Any] = {"code": "ABCDEFGH2345", "gate": "north", "nonce": "nonce-000001", "event_id": TOO_BIG}
    answer = requests.post(
        f"{launch.api}/v1/redemptions", json=scan, headers={"Authorization": f"Bearer {GATE_TOKEN}"}, timeout=10
    )
    assert answer.status_code == 422 and answer.json()["detail"]


def test_deeply_nested_json_lines_are_a_line_error(launch: Launch) -> None:
    line = b'{"order_no": "N1", "openid": "o", "ticket_count": 1, "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}\n"
    answer = requests.post(
        f"{launch.api}/v1/admin/events/{launch.event_id}/orders",
        data=line,
        headers={**ADMIN, "Content-Type": "application/x-ndjson"},
        timeout=30,
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["line"] == 1 and "nested" in answer.json()["errors"][0]["reason"]


def _encrypt_raw(aes_key: str, appid: str, body: bytes) -> str:
    key = base64.b64decode(aes_key + "=")
    plain = b"0" * 16 + struct.pack(">I", len(body)) + body + appid.encode()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(_pad(plain)) + encryptor.finalize()).decode()


def test_a_safe_mode_payload_that_is_not_utf8_is_a_4xx(launch: Launch) -> None:
    world = launch.world
    with session_scope() as session:
        session.execute(update(OfficialAccount).where(OfficialAccount.appid == world.oa_appid).values(safe_mode=True))
    pushes._accounts.clear()
    encrypted = _encrypt_raw(world.aes_key, world.oa_appid, b"<xml>\xff\xfe</xml>")
    timestamp, nonce = str(int(time.time())), "8723"
    params = {
        "signature": push_crypto.url_signature(world.server_token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": push_crypto.msg_signature(world.server_token, timestamp, nonce, encrypted),
    }
    body = f"<xml><ToUserName>gh</ToUserName><Encrypt>{encrypted}</Encrypt></xml>"
    try:
        answer = requests.post(f"{launch.api}/wechat/{world.oa_appid}/events", params=params, data=body, timeout=10)
    finally:
        pushes._accounts.clear()
    assert answer.status_code == 403 and "UTF-8" in answer.json()["detail"]
