"""The Prometheus alerting rules and the Grafana dashboard: promtool checks the rules and runs
their unit tests, every alert is tested firing and not firing, the README has a runbook line for
each, and rules and panels only use metrics ``/metrics`` exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from api import create_app
from tests.backing_services import in_ci
from tests.conftest import ADMIN_TOKEN

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found; install Debian's Prometheus with: apt-get install prometheus"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def _alerts() -> list[str]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


@pytest.mark.parametrize("command", ["check", "test"])
def test_promtool_accepts_the_rules_and_their_unit_tests(command: str) -> None:
    target = RULES if command == "check" else RULE_TESTS
    result = subprocess.run(
        [_promtool(), command, "rules", str(target)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for alert in _alerts():
        outcomes = {bool(case.get("exp_alerts")) for case in cases if case["alertname"] == alert}
        assert outcomes == {True, False}, f"{alert} needs a firing and a not-firing case"


def test_the_readme_has_a_runbook_line_for_every_alert() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [alert for alert in _alerts() if f"`{alert}`" not in readme]
    assert not missing, f"README lacks runbook lines for {missing}"


def test_promtool_accepts_the_monitoring_profiles_prometheus_config(tmp_path: Path) -> None:
    """The compose profile's config, with its container paths pointed at this checkout."""
    config = yaml.safe_load((RULES.parent / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    config["rule_files"] = [str(RULES)]
    token = tmp_path / "metrics_token"
    token.write_text("token", encoding="utf-8")
    for job in config["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token)
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [_promtool(), "check", "config", str(local)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _metric_names(text: str) -> set[str]:
    return set(re.findall(r"\b(cardpipe_[a-z0-9_]+)", text))


def test_the_rules_and_the_dashboard_use_only_metrics_cardpipe_exports(engine: object, redis_url: str) -> None:
    with TestClient(create_app()) as client:
        exposition = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).text
    # Every family is declared (# TYPE) even before it has samples.
    exported = set(re.findall(r"^# TYPE (\S+) ", exposition, flags=re.MULTILINE))
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "cardpipe.json").read_text(encoding="utf-8"))
    assert dashboard["uid"] == "cardpipe" and dashboard["panels"]
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = _metric_names(RULES.read_text(encoding="utf-8")) | _metric_names("\n".join(expressions))
    for name in used:
        family = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert name in exported or family in exported, f"{name} is not exported by /metrics"
