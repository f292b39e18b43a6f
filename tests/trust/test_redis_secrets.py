"""Redis holds no usable access_token or api_ticket: the cached values are sealed with keys
derived for that use, and every reader still gets the real value."""

from __future__ import annotations

import redis

from cardpipe.redis_values import as_bytes, as_members
from cardpipe.runtime import credential_store
from models import CredentialKind
from tests.claims.conftest import Launch


def everything_in(client: redis.Redis) -> bytes:
    dump = b""
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            value = client.get(key)
            dump += b"" if value is None else as_bytes(value)
        elif kind == b"hash":
            dump += b"".join(as_bytes(k) + as_bytes(v) for k, v in client.hgetall(key).items())
        elif kind == b"list":
            dump += b"".join(as_bytes(item) for item in client.lrange(key, 0, -1))
        elif kind in (b"set", b"zset"):
            members = as_members(client.zrange(key, 0, -1)) if kind == b"zset" else client.smembers(key)
            dump += b"".join(as_bytes(member) for member in members)
    return dump


def test_redis_holds_no_usable_token_or_ticket(launch: Launch, redis_url: str) -> None:
    # Given the account's token and card ticket fetched and cached (the launch polled and claimed)
    buyer = launch.buyer()
    launch.login(buyer)
    launch.ready_card_list(buyer)
    store = credential_store()
    appid = launch.world.oa_appid
    token = store.access_token(appid)
    ticket = store.card_ticket(appid)

    # Then neither value is anywhere in Redis, while the cache is used and readable
    dump = everything_in(redis.Redis.from_url(redis_url))
    assert token.encode() not in dump and ticket.value.encode() not in dump
    cached = store.cached_card_ticket(appid)
    assert cached is not None and (cached.value, cached.version) == (ticket.value, ticket.version)
    stored = store.stored(appid, CredentialKind.ACCESS_TOKEN)
    assert stored is not None and stored.value == token


def test_a_cache_entry_that_does_not_unseal_is_a_miss(launch: Launch, redis_url: str) -> None:
    store = credential_store()
    appid = launch.world.oa_appid
    ticket = store.card_ticket(appid)
    client = redis.Redis.from_url(redis_url)
    key = f"cardpipe:credential:{appid}:card_ticket"
    client.set(key, b'{"sealed": "garbage", "expires_at": 9999999999, "version": 1}')

    assert store.cached_card_ticket(appid) is None
    assert store.card_ticket(appid).value == ticket.value  # re-read from the database, cached again
