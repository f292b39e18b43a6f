"""Load for the one-fetch-per-expiry test, run in real worker and api processes: an actor and an
api route that call WeChat through cardpipe's credential store, like the workers' and routes' code does."""

from __future__ import annotations

import time

import dramatiq

import workers  # noqa: F401  (the real actors: the scheduler's refreshes run beside the load)
from api import create_app
from cardpipe.runtime import credential_store

PAUSE_S = 0.02


@dramatiq.actor(queue_name="loadgen", max_retries=0)
def hammer(appid: str, card_id: str, until: float) -> None:
    """Call card/get until ``until``; any error fails the message (the test counts errcodes)."""
    while time.time() < until:
        credential_store().card_api(appid).card_get(card_id)
        time.sleep(PAUSE_S)


app = create_app()


@app.get("/loadgen/{appid}/{card_id}")
def probe(appid: str, card_id: str) -> dict[str, str]:
    return {"card_type": str(credential_store().card_api(appid).card_get(card_id)["card_type"])}
