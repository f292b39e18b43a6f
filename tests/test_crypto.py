"""Safe-mode message crypto: round trip, padding to 32 bytes, appid and signature checks."""

import base64

import pytest

from wechat.crypto import MessageCrypto
from wechat.errors import SignatureError

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def test_round_trip_and_block_size() -> None:
    crypto = MessageCrypto("token", AES_KEY, "wx1234")
    encrypted = crypto.encrypt("<xml><A>中文</A></xml>")
    assert len(base64.b64decode(encrypted)) % 32 == 0
    assert crypto.decrypt(encrypted) == "<xml><A>中文</A></xml>"


def test_message_for_another_appid_is_rejected() -> None:
    encrypted = MessageCrypto("token", AES_KEY, "wxOTHER").encrypt("<xml/>")
    with pytest.raises(SignatureError, match="another appid"):
        MessageCrypto("token", AES_KEY, "wx1234").decrypt(encrypted)


def test_tampered_msg_signature_is_rejected() -> None:
    crypto = MessageCrypto("token", AES_KEY, "wx1234")
    encrypted = crypto.encrypt("<xml/>")
    good = crypto.sign("1700000000", "nonce", encrypted)
    assert crypto.verify_and_decrypt(good, "1700000000", "nonce", encrypted) == "<xml/>"
    with pytest.raises(SignatureError):
        crypto.verify_and_decrypt(good[:-1] + ("0" if good[-1] != "0" else "1"), "1700000000", "nonce", encrypted)


def test_garbage_payload_is_a_signature_error_not_a_crash() -> None:
    crypto = MessageCrypto("token", AES_KEY, "wx1234")
    for garbage in ("not base64!!", base64.b64encode(b"x" * 32).decode(), ""):
        with pytest.raises(SignatureError):
            crypto.decrypt(garbage)


def test_bad_encoding_aes_key_is_refused() -> None:
    with pytest.raises(ValueError):
        MessageCrypto("token", "short", "wx1234")
