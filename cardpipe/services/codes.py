"""Custom ticket codes: CSPRNG draws from an event's alphabet (≤ 20 alphanumeric characters).

Uniqueness per card is the database's job (unique (card_id, code)); a collision is redrawn by
the caller, never turned into a failure.
"""

from __future__ import annotations

import os
import re
import secrets

from wechat.signing import MAX_CODE_LENGTH

_ALPHANUMERIC = re.compile(r"^[0-9A-Za-z]+$")


class CodePolicyError(ValueError):
    pass


def check_policy(length: int, alphabet: str) -> None:
    if not 6 <= length <= MAX_CODE_LENGTH:
        raise CodePolicyError(f"code length must be 6..{MAX_CODE_LENGTH}, got {length}")
    if not _ALPHANUMERIC.match(alphabet) or len(set(alphabet)) != len(alphabet):
        raise CodePolicyError("code alphabet must be distinct letters and digits")
    if len(alphabet) ** length < 10**9:
        raise CodePolicyError("code space under 10^9: collisions would be frequent and codes guessable")


def new_code(length: int, alphabet: str) -> str:
    """One uniform draw below ``len(alphabet) ** length``, written in that base: as uniform as
    per-character choices, and one CSPRNG call instead of ``length``."""
    base = len(alphabet)
    number = secrets.randbelow(base**length)
    chars = []
    for _ in range(length):
        number, digit = divmod(number, base)
        chars.append(alphabet[digit])
    return "".join(chars)


def new_codes(count: int, length: int, alphabet: str) -> list[str]:
    """``count`` codes, distinct among themselves, drawn in bulk: one ``os.urandom`` call maps
    every byte below the largest multiple of the alphabet size to ``byte % size`` and drops the
    rest (rejection sampling, so still uniform), at a tenth of the per-code cost of
    :func:`new_code` — pre-issue draws a million of them."""
    base = len(alphabet)
    usable = 256 - 256 % base
    table = bytes(ord(alphabet[byte % base]) if byte < usable else 0 for byte in range(256))
    rejected = bytes(range(usable, 256))
    codes: set[str] = set()
    while len(codes) < count:
        wanted = (count - len(codes)) * length
        # Draw ~ wanted * 256 / usable bytes plus slack; a short draw just loops once more.
        chars = os.urandom(wanted * 256 // usable + length * 8).translate(table, rejected).decode("ascii")
        codes.update(chars[i : i + length] for i in range(0, len(chars) - length + 1, length))
    return list(codes)[:count]
