"""Signing one ticket's cardExt: a fresh CSPRNG nonce and the current time on every signature.

Pre-issue, re-sign after a ticket rotation, and the fresh payload after a cancelled addCard all
go through :func:`sign_card_ext`, so there is one place that decides what a cardExt contains.
WeChat refuses a reused (timestamp, nonce_str) pair, so the nonce is never derived or reused.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from wechat.signing import CardExt


def new_nonce() -> str:
    """32 hex characters (128 random bits): letters and digits only, at WeChat's 32-char limit."""
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class SignedExt:
    card_ext: str
    nonce: str
    timestamp: int


def sign_card_ext(
    *,
    api_ticket: str,
    card_id: str,
    code: str | None,
    outer_str: str | None,
    timestamp: int | None = None,
) -> SignedExt:
    """The cardExt JSON string for one ticket. ``code`` is None for deposit-mode cards (WeChat
    picks the code); ``outer_str`` comes back in user_get_card and identifies the ticket."""
    nonce = new_nonce()
    stamp = int(time.time()) if timestamp is None else timestamp
    ext = CardExt(timestamp=stamp, nonce_str=nonce, code=code, outer_str=outer_str)
    return SignedExt(card_ext=ext.to_json(api_ticket, card_id), nonce=nonce, timestamp=stamp)
