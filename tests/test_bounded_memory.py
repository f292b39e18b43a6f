"""What a long-running process keeps is bounded: the api's cache of verified session tokens, and
the fake WeChat's push history (ids keep counting past what it forgets)."""

from __future__ import annotations

import time

from cardpipe.services import miniprogram_sessions
from wechat.fake.clock import OffsetClock
from wechat.fake.pusher import EventPusher, PushTarget
from wechat.pushes import UserGetCard


def test_the_verified_session_cache_stays_within_its_size() -> None:
    expires_at = int(time.time()) + 3600
    limit = miniprogram_sessions._decode.cache_info().maxsize
    assert limit is not None
    for index in range(limit + 500):
        session = miniprogram_sessions.MpSession("wxmpbounded", "wxoabounded", f"o-bounded-{index}", None, expires_at)
        assert miniprogram_sessions.verify_token(miniprogram_sessions.issue_token(session)) == session
    assert miniprogram_sessions._decode.cache_info().currsize == limit


def test_the_fake_keeps_only_its_newest_pushes() -> None:
    pusher = EventPusher(OffsetClock(), history=3)
    target = PushTarget("wxoabounded", None, "token", None, False)
    try:
        ids = [
            pusher.submit(
                target,
                UserGetCard(to_user="gh_b", from_user="o", create_time=1, card_id="pCARD", code=f"C{i}", outer_str=""),
            )
            for i in range(5)
        ]
    finally:
        pusher.close()
    assert ids == [1, 2, 3, 4, 5]
    assert [record["id"] for record in pusher.records()] == [3, 4, 5]
