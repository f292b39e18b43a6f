"""The poll payload cache: pre-serialized claim answers in Redis, one record per (mini program,
user, order number).

A record is a one-line header — the oldest ticket version that signed a cardExt in it (0: no
signature inside), the OA whose card ticket that is, the ETag, the claim status — then the JSON
body exactly as it is sent. The hot path reads the record and the OA's cached card ticket in
one ``MGET``; a record signed by an older ticket version than the current one is stale and
rebuilt (re-signed) instead of served.

Writers race: a worker that changes tickets invalidates the record (``INCR`` of a generation
key, then ``DEL``), while a poll may be rebuilding it from rows it read before that change. A
rebuild therefore stores its record only if the generation it read before touching the database
is still current (a compare-and-set in Lua), so a stale rebuild never outlives an invalidation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from cardpipe.credentials import card_ticket_cache_key
from cardpipe.redis_values import as_bytes

KEY_PREFIX = "cardpipe:claim:"
_GENERATION_PREFIX = "cardpipe:claim-gen:"
_JIT_PREFIX = "cardpipe:claim-jit:"
#: Generation keys outlive any rebuild that could have read the previous generation.
GENERATION_TTL_S = 86_400
JIT_RESEND_S = 30

#: KEYS: record, generation, record, generation…; ARGV: seen generation, record, ttl ms per pair.
_STORE_IF_CURRENT = """
local stored = 0
for i = 1, #KEYS, 2 do
  local a = (i - 1) / 2 * 3
  if (redis.call('GET', KEYS[i + 1]) or '0') == ARGV[a + 1] then
    redis.call('SET', KEYS[i], ARGV[a + 2], 'PX', ARGV[a + 3])
    stored = stored + 1
  end
end
return stored
"""

#: KEYS: record, generation, record, generation…; ARGV: the generations' ttl (s).
_INVALIDATE = """
for i = 1, #KEYS, 2 do
  redis.call('INCR', KEYS[i + 1])
  redis.call('EXPIRE', KEYS[i + 1], ARGV[1])
  redis.call('DEL', KEYS[i])
end
return #KEYS / 2
"""


def record_key(mp_appid: str, openid: str, order_no: str) -> str:
    return f"{KEY_PREFIX}{mp_appid}:{openid}:{order_no}"


def _generation_key(key: str) -> str:
    return _GENERATION_PREFIX + key.removeprefix(KEY_PREFIX)


@dataclass(frozen=True, slots=True)
class CachedClaim:
    #: The oldest card ticket version among the signatures in ``body``; 0 when it holds none.
    ticket_version: int
    oa_appid: str
    etag: str
    status: str
    body: bytes

    @classmethod
    def of(cls, body: dict[str, object], *, ticket_version: int, oa_appid: str) -> CachedClaim:
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        etag = '"' + hashlib.blake2b(raw, digest_size=12).hexdigest() + '"'
        return cls(ticket_version=ticket_version, oa_appid=oa_appid, etag=etag, status=str(body["status"]), body=raw)

    def is_stale(self, current_version: int | None) -> bool:
        """Signed by an older card ticket than the current one, or the current one is unknown."""
        if not self.ticket_version:
            return False
        return current_version is None or self.ticket_version < current_version

    def encode(self) -> bytes:
        header = f"{self.ticket_version} {self.oa_appid} {self.etag} {self.status}\n".encode("ascii")
        return header + self.body

    @classmethod
    def decode(cls, raw: bytes) -> CachedClaim:
        header, _, body = raw.partition(b"\n")
        version, oa_appid, etag, status = header.decode("ascii").split(" ")
        return cls(ticket_version=int(version), oa_appid=oa_appid, etag=etag, status=status, body=body)


def _ticket_version(raw: bytes | None) -> int | None:
    return None if raw is None else int(json.loads(raw)["version"])


async def read_many(redis: AsyncRedis, keys: list[str], oa_appid: str) -> list[CachedClaim | None]:
    """The records of ``keys`` that may be served as they are, in one round trip: a missing
    record, a stale one, or one built for another OA than the caller's is None (to rebuild)."""
    *raws, ticket = await redis.mget(*keys, card_ticket_cache_key(oa_appid))
    return _servable(raws, ticket, oa_appid)


@dataclass(frozen=True, slots=True)
class Reading:
    """What :func:`read_for_rebuild` read in one round trip."""

    oa_appid: str
    #: The records that may be served as they are (None: to rebuild), in the keys' order.
    claims: list[CachedClaim | None]
    #: Each key's generation, read before the database (for :func:`store_if_current`).
    generations: list[bytes]
    #: The OA's cached card ticket as stored (``StoredCredential.from_cache``), None if absent.
    card_ticket: bytes | None


def read_for_rebuild(redis: Redis, keys: list[str], oa_appid: str) -> Reading:
    """:func:`read_many` from a worker thread, with what a rebuild of the rest needs first — the
    keys' generations and the card ticket — in the same round trip."""
    raws = redis.mget([*keys, card_ticket_cache_key(oa_appid), *(_generation_key(key) for key in keys)])
    records, ticket, seen = raws[: len(keys)], raws[len(keys)], raws[len(keys) + 1 :]
    return Reading(
        oa_appid,
        _servable(records, ticket, oa_appid),
        [as_bytes(raw) if raw else b"0" for raw in seen],
        None if ticket is None else as_bytes(ticket),
    )


def _servable(
    raws: Sequence[bytes | str | None], ticket: bytes | str | None, oa_appid: str
) -> list[CachedClaim | None]:
    current = _ticket_version(None if ticket is None else as_bytes(ticket))
    claims = [None if raw is None else CachedClaim.decode(as_bytes(raw)) for raw in raws]
    return [
        None if claim is None or claim.oa_appid != oa_appid or claim.is_stale(current) else claim for claim in claims
    ]


def generations(redis: Redis, keys: list[str]) -> list[bytes]:
    """Read before the database, handed back to :func:`store_if_current`."""
    return [as_bytes(raw) if raw else b"0" for raw in redis.mget([_generation_key(key) for key in keys])]


def store_if_current(redis: Redis, records: Sequence[tuple[str, CachedClaim, bytes, int]]) -> int:
    """Store records (key, claim, the generation seen before the database, ttl ms) in one round
    trip, each only if its own generation is still the one seen; how many were stored."""
    if not records:
        return 0
    keys = [name for key, _, _, _ in records for name in (key, _generation_key(key))]
    args = [arg for _, claim, seen, ttl_ms in records for arg in (seen, claim.encode(), ttl_ms)]
    return int(redis.eval(_STORE_IF_CURRENT, len(keys), *keys, *args))


def invalidate(redis: Redis, keys: Iterable[str]) -> None:
    """Drop the records and bump their generations (after the change is committed), in one
    command whatever their number (a drain round invalidates hundreds)."""
    names = [name for key in keys for name in (key, _generation_key(key))]
    if names:
        redis.eval(_INVALIDATE, len(names), *names, GENERATION_TTL_S)


def invalidate_quietly(redis: Redis, keys: Iterable[str]) -> bool:
    """:func:`invalidate`, or False with Redis away (the caller has queued it through the outbox)."""
    try:
        invalidate(redis, keys)
    except RedisError:
        return False
    return True


def first_issue_request(redis: Redis, order_id: int) -> bool:
    """True for the first just-in-time issue request of an order in ``JIT_RESEND_S``: polls of a
    pending order do not each enqueue a message."""
    return bool(redis.set(f"{_JIT_PREFIX}{order_id}", b"1", nx=True, ex=JIT_RESEND_S))
