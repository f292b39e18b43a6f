"""Every command in docker-compose.yml, run as written against the test PostgreSQL and Redis:
each must start and do its job, so the compose file cannot drift from the CLI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import requests
import yaml

from cardpipe.services import ops_history
from cardpipe.services.queues import QueueMonitor
from tests.conftest import ADMIN_TOKEN
from tests.live_server import free_port
from workers.broker import broker

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
APP_SERVICES = ("migrate", "api", "worker", "scheduler", "fake-wechat")
#: Container ports in the compose file, replaced by free local ones here.
PORTS = {"8000": str(free_port()), "9000": str(free_port())}


def _commands() -> dict[str, list[str]]:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    return {name: [PORTS.get(arg, arg) for arg in map(str, services[name]["command"])] for name in APP_SERVICES}


def _wait(check: Callable[[], bool], what: str, process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{what} exited with {process.returncode}"
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} did not come up in {timeout_s}s")


def _http_ok(url: str) -> Callable[[], bool]:
    return lambda: requests.get(url, timeout=1).status_code == 200


def test_compose_file_declares_the_app_services() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert set(APP_SERVICES) <= set(services)
    assert services["fake-wechat"]["profiles"] == ["sandbox"]
    assert "noeviction" in services["redis"]["command"] and "--appendonly" in services["redis"]["command"]


def _has_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_compose(), reason="no docker client with the compose plugin on this machine")
def test_docker_compose_accepts_the_file() -> None:
    env = {
        **os.environ,
        "CARDPIPE_ADMIN_TOKENS": "x",
        "CARDPIPE_SECRET_KEYS": "y",
        "CARDPIPE_METRICS_TOKEN": "x",
        "GRAFANA_ADMIN_PASSWORD": "z",
    }
    for profile in ([], ["--profile", "monitoring"]):
        command = ["docker", "compose", "-f", str(COMPOSE), *profile, "config", "-q"]
        result = subprocess.run(command, env=env, capture_output=True)
        assert result.returncode == 0, result.stderr.decode()


def test_the_monitoring_profile_loads_the_rules_and_the_dashboard() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["monitoring"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in prometheus["volumes"]
    assert "./deploy/grafana/cardpipe.json:/var/lib/grafana/dashboards/cardpipe.json:ro" in grafana["volumes"]
    assert services["worker"]["environment"]["CARDPIPE_WORKER_METRICS"] == "true"
    scrape = yaml.safe_load((COMPOSE.parent / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in scrape["scrape_configs"]}
    assert targets == {"cardpipe-api": ["api:8000"], "cardpipe-worker": ["worker:9191"]}


def test_every_compose_command_runs(database_url: str, redis_url: str, engine: object, tmp_path: Path) -> None:
    worker_metrics_port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CARDPIPE_ADMIN_TOKENS": ADMIN_TOKEN,
        # As compose sets it for the workers: dramatiq's metrics, on a free port here.
        "CARDPIPE_WORKER_METRICS": "true",
        "dramatiq_prom_port": str(worker_metrics_port),
        "dramatiq_prom_db": str(tmp_path / "dramatiq-prometheus"),
    }
    commands = _commands()
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "cardpipe", *commands[name]], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        started.append(process)
        return process

    broker.flush_all()
    client = redis.Redis.from_url(redis_url)
    try:
        assert start("migrate").wait(timeout=60) == 0
        _wait(_http_ok(f"http://127.0.0.1:{PORTS['8000']}/healthz"), "api", start("api"))
        _wait(_http_ok(f"http://127.0.0.1:{PORTS['9000']}/__fake__/clock"), "fake-wechat", start("fake-wechat"))
        before = {w.worker_id for w in QueueMonitor(broker).workers()}
        worker = start("worker")
        _wait(lambda: len({w.worker_id for w in QueueMonitor(broker).workers()} - before) >= 2, "worker", worker)
        scheduler = start("scheduler")
        _wait(lambda: client.get("cardpipe:scheduler:leader") is not None, "scheduler", scheduler)
        # The leader samples the last minute for the ops charts as soon as it leads.
        _wait(lambda: client.get(ops_history.LAST_SAMPLE_KEY) is not None, "ops sample", scheduler)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        metrics = requests.get(f"http://127.0.0.1:{PORTS['8000']}/metrics", headers=admin, timeout=5)
        assert metrics.status_code == 200
        # What the alerts need: a leader, and a live worker on every queue.
        assert "cardpipe_scheduler_leader 1.0" in metrics.text
        assert 'cardpipe_queue_live_workers{queue="claims"} 2.0' in metrics.text
        worker_metrics = f"http://127.0.0.1:{worker_metrics_port}/"
        _wait(lambda: "dramatiq_messages" in requests.get(worker_metrics, timeout=1).text, "worker metrics", worker)
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        client.close()
        broker.flush_all()
