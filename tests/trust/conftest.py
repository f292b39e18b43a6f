"""The trust-boundary tests run against the claim flow's live app and launch fixtures, plus a
second tenant (another official account with its own mini program) that tries to reach the
first one's tickets."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cardpipe import runtime as cardpipe_runtime
from cardpipe.db import session_scope
from cardpipe.services import accounts
from tests.claims.conftest import api_url, launch  # noqa: F401  (fixtures)
from tests.worlds import MakeWorld, World


@dataclass
class Tenant:
    world: World
    url: str


@pytest.fixture
def other_tenant(make_world: MakeWorld, api_url: str) -> Tenant:  # noqa: F811
    """Another official account and mini program, registered here and at the fake."""
    world = make_world()
    with session_scope() as session:
        accounts.upsert_official_account(
            session,
            accounts.OfficialAccountInput(
                appid=world.oa_appid,
                app_secret=world.oa_secret,
                server_token=world.server_token,
                encoding_aes_key=world.aes_key,
                original_id=world.original_id,
                use_stable_token=False,
            ),
        )
        accounts.upsert_mini_program(session, world.mp_appid, world.mp_secret, world.oa_appid)
    cardpipe_runtime.reset()
    return Tenant(world, f"{api_url}/wechat/{world.oa_appid}/events")
