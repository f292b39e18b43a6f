"""Safe-mode (安全模式) message encryption, protocol page §7.2.

key = base64(EncodingAESKey + "="), AES-256-CBC with IV = key[:16], PKCS#7 padded to 32 bytes.
Plaintext = 16 random bytes ‖ 4-byte big-endian length ‖ message ‖ appid.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from wechat.errors import SignatureError
from wechat.signing import msg_signature, signatures_match

PKCS7_BLOCK = 32


def _pad(data: bytes) -> bytes:
    amount = PKCS7_BLOCK - len(data) % PKCS7_BLOCK
    return data + bytes([amount]) * amount


def _unpad(data: bytes) -> bytes:
    if not data:
        raise SignatureError("empty safe-mode payload")
    amount = data[-1]
    if not 1 <= amount <= PKCS7_BLOCK or data[-amount:] != bytes([amount]) * amount:
        raise SignatureError("bad PKCS#7 padding in safe-mode payload")
    return data[:-amount]


class MessageCrypto:
    """Encrypts and decrypts safe-mode messages for one official account."""

    def __init__(self, token: str, encoding_aes_key: str, appid: str) -> None:
        if len(encoding_aes_key) != 43:
            raise ValueError("EncodingAESKey must be 43 characters")
        try:
            self._key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except binascii.Error as exc:
            raise ValueError("EncodingAESKey is not valid base64") from exc
        self._token = token
        self._appid = appid

    def __repr__(self) -> str:
        return f"MessageCrypto(appid={self._appid!r})"

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def encrypt(self, message: str, *, random_prefix: bytes | None = None) -> str:
        body = message.encode("utf-8")
        prefix = random_prefix if random_prefix is not None else os.urandom(16)
        plain = prefix + struct.pack(">I", len(body)) + body + self._appid.encode("utf-8")
        encryptor = self._cipher().encryptor()
        cipher_text = encryptor.update(_pad(plain)) + encryptor.finalize()
        return base64.b64encode(cipher_text).decode("ascii")

    def decrypt(self, encrypted: str) -> str:
        try:
            cipher_text = base64.b64decode(encrypted, validate=True)
        except binascii.Error as exc:
            raise SignatureError("safe-mode payload is not base64") from exc
        if not cipher_text or len(cipher_text) % 16:
            raise SignatureError("safe-mode payload has a bad length")
        decryptor = self._cipher().decryptor()
        plain = _unpad(decryptor.update(cipher_text) + decryptor.finalize())
        if len(plain) < 20:
            raise SignatureError("safe-mode payload too short")
        (length,) = struct.unpack(">I", plain[16:20])
        body, appid = plain[20 : 20 + length], plain[20 + length :]
        if len(body) != length:
            raise SignatureError("safe-mode payload length field is wrong")
        if appid.decode("utf-8", "replace") != self._appid:
            raise SignatureError("safe-mode payload is for another appid")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SignatureError("safe-mode payload is not UTF-8") from exc

    def sign(self, timestamp: str, nonce: str, encrypted: str) -> str:
        return msg_signature(self._token, timestamp, nonce, encrypted)

    def verify_and_decrypt(self, signature: str, timestamp: str, nonce: str, encrypted: str) -> str:
        if not signatures_match(self.sign(timestamp, nonce, encrypted), signature):
            raise SignatureError("msg_signature does not match")
        return self.decrypt(encrypted)
