"""Must-show: four worker processes and the api call WeChat for ~40 s across several token
expiries (the fake's tokens live 12 s), with the scheduler refreshing ahead; the fake sees
exactly one token fetch per token lifetime and not one 40001/42001."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cardpipe.db import session_scope
from models import Credential, CredentialKind
from tests.credentials.conftest import open_shop
from tests.credentials.loadgen import hammer
from tests.live_server import free_port
from tests.waiting import wait_until
from tests.worlds import World
from wechat.fake import FakeWeChatControl
from workers.broker import broker

TOKEN_TTL_S = 12
REFRESH_MARGIN_S = 4
READER_MIN_VALIDITY_S = 1.5
DURATION_S = 40
CALLS_PER_S = 100


@pytest.fixture
def short_tokens(fake: FakeWeChatControl) -> Iterator[None]:
    fake.configure(token_ttl_s=TOKEN_TTL_S)
    yield
    fake.configure(token_ttl_s=7200)


@pytest.mark.slow
def test_workers_and_api_see_one_token_fetch_per_expiry_and_no_40001(
    cardpipe_world: World,
    fake: FakeWeChatControl,
    short_tokens: None,
    subprocess_env: dict[str, str],
    tmp_path: Path,
) -> None:
    fake.reset_stats()
    shop = open_shop(cardpipe_world, fake)  # the first token is fetched here
    watcher = FetchWatcher(fake, shop.appid, first_fetch=time.time())
    watcher.start()
    env = {
        **subprocess_env,
        "CARDPIPE_CREDENTIAL_REFRESH_MARGIN_S": str(REFRESH_MARGIN_S),
        "CARDPIPE_CREDENTIAL_READER_MIN_VALIDITY_S": str(READER_MIN_VALIDITY_S),
        "CARDPIPE_SCHEDULER_REFRESH_EVERY_S": "1",
        "CARDPIPE_WECHAT_CALLS_PER_S": str(CALLS_PER_S),
    }
    port = free_port()
    commands = {
        "workers": [sys.executable, "-m", "dramatiq", "tests.credentials.loadgen", "-p", "4", "-t", "4",
                    "-Q", "loadgen", "maintenance"],
        "api": [sys.executable, "-m", "uvicorn", "tests.credentials.loadgen:app", "--port", str(port),
                "--log-level", "warning"],
        "scheduler": [sys.executable, "-m", "cardpipe", "scheduler"],
    }  # fmt: skip
    processes = [
        subprocess.Popen(command, env=env, stdout=(tmp_path / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)
        for name, command in commands.items()
    ]
    api = f"http://127.0.0.1:{port}/loadgen/{shop.appid}/{shop.card_id}"
    try:
        wait_until(lambda: _answers(api), what="the api", timeout_s=60)
        up_at = time.time()
        until = up_at + DURATION_S
        for _ in range(8):
            hammer.send(shop.appid, shop.card_id, until)
        api_calls = _drive(api, until)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        watcher.stop()

    fetched_at = watcher.fetched_at
    stats = fake.stats()
    errors = {code: n for code, n in stats["errcodes"].get("/card/get", {}).items()}
    assert errors == {}, errors
    assert stats["calls_by_appid"][shop.appid]["/card/get"] > api_calls * 2  # the workers called too
    assert broker.client.zcard("dramatiq:loadgen.XQ") == 0  # no hammer failed
    # One fetch per token lifetime once everything runs: each came once the previous token was
    # inside the refresh margin, never twice for one token, never after a token had expired.
    # (While the processes start on a loaded machine nobody is there to refresh ahead, and the
    # first reader refreshes an expired token: still one fetch, counted below.)
    running = [t for t in fetched_at if t >= up_at]
    assert len(running) >= DURATION_S // TOKEN_TTL_S, fetched_at
    gaps = [b - a for a, b in itertools.pairwise(running)]
    assert all(TOKEN_TTL_S - REFRESH_MARGIN_S - 1.5 <= gap <= TOKEN_TTL_S + 0.5 for gap in gaps), gaps
    assert stats["token_fetches"][shop.appid] == len(fetched_at)
    with session_scope() as session:
        stored = session.query(Credential).filter_by(kind=CredentialKind.ACCESS_TOKEN).one()
    assert stored.version == len(fetched_at)  # every fetch went through the store


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


class FetchWatcher(threading.Thread):
    """Notes when the fake's token-fetch count goes up, from the first fetch on (a refresh may
    fall while the processes are still starting on a loaded machine)."""

    def __init__(self, fake: FakeWeChatControl, appid: str, *, first_fetch: float) -> None:
        super().__init__(daemon=True)
        self._fake, self._appid = fake, appid
        self._stopping = threading.Event()
        self._fetches = int(fake.stats()["token_fetches"].get(appid, 0))
        assert self._fetches == 1
        self.fetched_at = [first_fetch]

    def run(self) -> None:
        while not self._stopping.wait(0.2):
            self._sample()

    def _sample(self) -> None:
        now_fetches = int(self._fake.stats()["token_fetches"].get(self._appid, 0))
        self.fetched_at += [time.time()] * (now_fetches - self._fetches)
        self._fetches = now_fetches

    def stop(self) -> None:
        """Stop sampling (after the processes that fetch have exited) with one last sample."""
        self._stopping.set()
        self.join(timeout=5)
        self._sample()


def _drive(api: str, until: float) -> int:
    """Call the api until ``until``; returns how many calls it answered."""
    session = requests.Session()
    calls = 0
    while time.time() < until:
        response = session.get(api, timeout=10)
        assert response.status_code == 200, response.text
        calls += 1
        time.sleep(0.02)
    session.close()
    return calls
