"""Signatures of the WeChat card protocol (protocol page §5 and §7).

All of them are the same primitive: take the *values*, sort them as plain strings, concatenate
with no separator, SHA-1, lowercase hex. What differs is which values go in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass

#: cardExt fields that are part of the signature (besides api_ticket and card_id, which are not
#: in cardExt). Anything else in cardExt (outer_str, fixed_begintimestamp) is never signed.
SIGNED_EXT_FIELDS = ("code", "openid", "timestamp", "nonce_str")
MAX_CODE_LENGTH = 20
MAX_NONCE_LENGTH = 32


def sort_concat(values: Iterable[str]) -> str:
    """The string that is hashed: non-empty values in byte order, no separator."""
    return "".join(sorted(v for v in values if v))


def sha1_signature(values: Iterable[str]) -> str:
    return hashlib.sha1(sort_concat(values).encode("utf-8")).hexdigest()


def signatures_match(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


@dataclass(frozen=True, slots=True)
class CardExt:
    """The unsigned content of a cardExt. ``code`` only for custom-code cards, ``openid`` only
    for ``bind_openid`` cards; absent fields are left out of both the JSON and the signature."""

    timestamp: int
    nonce_str: str
    code: str | None = None
    openid: str | None = None
    outer_str: str | None = None

    def signed_values(self, api_ticket: str, card_id: str) -> list[str]:
        values = [api_ticket, card_id, str(self.timestamp), self.nonce_str]
        values += [v for v in (self.code, self.openid) if v]
        return values

    def signature(self, api_ticket: str, card_id: str) -> str:
        return sha1_signature(self.signed_values(api_ticket, card_id))

    def to_json(self, api_ticket: str, card_id: str) -> str:
        """The cardExt JSON *string* for ``wx.addCard``. The timestamp is emitted as a string,
        as the JS-SDK appendix says; both encodings sign the same digits."""
        fields: dict[str, str] = {}
        if self.code:
            fields["code"] = self.code
        if self.openid:
            fields["openid"] = self.openid
        fields["timestamp"] = str(self.timestamp)
        fields["nonce_str"] = self.nonce_str
        if self.outer_str:
            fields["outer_str"] = self.outer_str
        fields["signature"] = self.signature(api_ticket, card_id)
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


def card_ext_signed_values(api_ticket: str, card_id: str, ext: dict[str, object]) -> list[str]:
    """The values WeChat signs for a *received* cardExt: exactly the signed fields present."""
    values = [api_ticket, card_id]
    values += [str(ext[name]) for name in SIGNED_EXT_FIELDS if ext.get(name) not in (None, "")]
    return values


def server_signature(token: str, timestamp: str, nonce: str) -> str:
    """``signature`` of a push or URL verification: sha1 of sorted [token, timestamp, nonce]."""
    return sha1_signature([token, timestamp, nonce])


def msg_signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    """``msg_signature`` of a safe-mode push: sha1 of sorted [token, timestamp, nonce, Encrypt]."""
    return sha1_signature([token, timestamp, nonce, encrypted])
