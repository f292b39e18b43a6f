"""Encryption of secrets at rest (AppSecrets, server tokens, AES keys, access tokens, tickets).

Fernet with a key list (MultiFernet): the first key encrypts, every key decrypts, so keys can be
rotated. Without configured keys a key file is created once in the data directory, which keeps
the embedded default working with nothing to set up.
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cardpipe.settings import get_settings


class SecretDecryptionError(RuntimeError):
    """A stored secret cannot be decrypted with any configured key."""


def _key_file_key(data_dir: Path) -> bytes:
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_bytes().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    staging = data_dir / f".secret.key.{os.getpid()}"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    try:
        # link() is atomic and fails if the name exists: of processes starting together, one
        # key wins and every process reads that one.
        os.link(staging, path)
    except FileExistsError:
        key = path.read_bytes().strip()
    finally:
        staging.unlink()
    return key


@lru_cache(maxsize=1)
def _keys() -> tuple[bytes, ...]:
    settings = get_settings()
    keys = [k.get_secret_value().encode() for k in settings.secret_keys]
    if not keys:
        keys = [_key_file_key(settings.data_dir)]
    return tuple(keys)


@lru_cache(maxsize=1)
def _box() -> MultiFernet:
    return MultiFernet([Fernet(k) for k in _keys()])


@lru_cache(maxsize=8)
def derived_keys(purpose: str) -> tuple[bytes, ...]:
    """One 32-byte key per configured key, derived (HKDF-SHA256) for ``purpose`` only, in the same
    order: sign with the first, accept any. Other uses (e.g. session-token MACs) never share the
    at-rest encryption key itself."""
    return tuple(
        HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"cardpipe:{purpose}".encode()).derive(key)
        for key in _keys()
    )


@lru_cache(maxsize=8)
def _purpose_box(purpose: str) -> MultiFernet:
    return MultiFernet([Fernet(base64.urlsafe_b64encode(key)) for key in derived_keys(purpose)])


def seal(purpose: str, plain: str) -> str:
    """Encrypt ``plain`` with keys derived for ``purpose`` only (e.g. values cached in Redis)."""
    return _purpose_box(purpose).encrypt(plain.encode("utf-8")).decode("ascii")


def unseal(purpose: str, token: str) -> str:
    """What :func:`seal` sealed. A token seen lately is not decrypted again (the same card ticket
    is read from Redis on every claim until it rotates); keys that change miss that memory."""
    return _unsealed(purpose, token, _keys())


@lru_cache(maxsize=256)
def _unsealed(purpose: str, token: str, keys: tuple[bytes, ...]) -> str:
    try:
        return _purpose_box(purpose).decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken as exc:
        raise SecretDecryptionError(f"{purpose} value does not decrypt with the configured keys") from exc


def encrypt(plain: str) -> str:
    return _box().encrypt(plain.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _box().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken as exc:
        raise SecretDecryptionError("stored secret does not decrypt with the configured keys") from exc


def reset_cache() -> None:
    """Forget the loaded keys (tests that change settings)."""
    _keys.cache_clear()
    _box.cache_clear()
    derived_keys.cache_clear()
    _purpose_box.cache_clear()
    _unsealed.cache_clear()
