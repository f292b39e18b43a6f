"""schemathesis against the app's own OpenAPI schema: every operation, a bounded number of
generated requests (valid and invalid), each sent unauthenticated and with valid admin, gate and
Mini Program session credentials. No answer may be a server error or differ from the schema."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from api import create_app
from cardpipe.services.miniprogram_sessions import MpSession, issue_token
from tests.conftest import ADMIN_TOKEN, GATE_TOKEN
from tests.worlds import World
from wechat.fake import FakeWeChatServer

if TYPE_CHECKING:
    from schemathesis.specs.openapi.schemas import OpenApiCase

#: Generated requests per operation (each sent with the four credentials).
EXAMPLES = 8
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture
def credentials(cardpipe_world: World, fake_server: FakeWeChatServer, redis_url: str) -> dict[str, dict[str, str]]:
    """The four callers, in a fresh world (an account and mini program) with the fake WeChat up."""
    session = MpSession(
        cardpipe_world.mp_appid, cardpipe_world.oa_appid, "o-schemathesis", None, int(time.time()) + 3600
    )
    return {
        "anonymous": {},
        "admin": {"Authorization": f"Bearer {ADMIN_TOKEN}"},
        "gate": {"Authorization": f"Bearer {GATE_TOKEN}"},
        "session": {"Authorization": f"Bearer {issue_token(session)}"},
    }


@schemathesis.serializer("text/csv", "application/x-ndjson")
def _text_file(ctx: object, value: object) -> bytes:
    """The order import's files are text: generated strings are sent as they are."""
    return value.encode("utf-8") if isinstance(value, str) else str(value).encode("utf-8")


schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_no_schema_violations(case: OpenApiCase, credentials: dict[str, dict[str, str]]) -> None:
    for headers in credentials.values():
        sent = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.call_and_validate(headers={**sent, **headers}, checks=CHECKS)
