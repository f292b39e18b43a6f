"""The fake's own push signatures and safe-mode (安全模式) crypto, written from the protocol page
§7.1–7.2 and kept independent of ``wechat.signing`` / ``wechat.crypto`` on purpose: interop tests
then check the production modules against a second implementation instead of against themselves.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 32


class SafeModeError(ValueError):
    """A safe-mode payload or its msg_signature is wrong."""


def _key(encoding_aes_key: str) -> bytes:
    key = base64.b64decode(encoding_aes_key + "=")
    if len(key) != 32:
        raise SafeModeError("EncodingAESKey must decode to 32 bytes")
    return key


def sha1_sorted(*values: str) -> str:
    return hashlib.sha1("".join(sorted(values)).encode("utf-8")).hexdigest()


def url_signature(token: str, timestamp: str, nonce: str) -> str:
    return sha1_sorted(token, timestamp, nonce)


def msg_signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    return sha1_sorted(token, timestamp, nonce, encrypted)


def encrypt(encoding_aes_key: str, appid: str, message: str) -> str:
    key = _key(encoding_aes_key)
    body = message.encode("utf-8")
    plain = os.urandom(16) + struct.pack("!I", len(body)) + body + appid.encode("utf-8")
    pad = BLOCK - len(plain) % BLOCK
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()).decode()


def decrypt(encoding_aes_key: str, appid: str, encrypted: str) -> str:
    key = _key(encoding_aes_key)
    try:
        data = base64.b64decode(encrypted, validate=True)
    except ValueError as exc:
        raise SafeModeError("not base64") from exc
    if not data or len(data) % 16:
        raise SafeModeError("bad cipher text length")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = decryptor.update(data) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
        raise SafeModeError("bad padding")
    plain = plain[:-pad]
    if len(plain) < 20:
        raise SafeModeError("payload too short")
    (length,) = struct.unpack("!I", plain[16:20])
    body, tail = plain[20 : 20 + length], plain[20 + length :]
    if len(body) != length or tail != appid.encode("utf-8"):
        raise SafeModeError("wrong length or appid")
    return body.decode("utf-8")
