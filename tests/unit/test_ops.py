"""The operations files in ops/: the alert rules and the dashboard use only metrics the code
exports. CI also checks the rules with promtool (a step of .ci/run, which installs it)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from topic_sync.app.metrics import METRICS

OPS = Path(__file__).resolve().parents[2] / "ops"
EXPORTED = {m.name for m in METRICS}
NAME = re.compile(r"\btopic_sync_[a-z_]+\b")


def _used(expressions: list[str]) -> set[str]:
    used: set[str] = set()
    for expr in expressions:
        names = set(NAME.findall(expr))
        assert names, f"an expression uses no topic-sync metric: {expr}"
        used |= names
    return used


def _rules() -> list[dict]:
    document = yaml.safe_load((OPS / "prometheus-alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_alert_rules_use_only_exported_metrics() -> None:
    rules = _rules()
    assert {r["alert"] for r in rules} >= {
        "TopicSyncNotPublishedToday",
        "TopicSyncLastRunFailed",
        "TopicSyncNoSuccessFor26Hours",
        "TopicSyncDeadTokenGuardTripped",
        "TopicSyncManyTokenFailures",
        "TopicSyncRunLongerThanUsual",
    }
    used = _used([r["expr"] for r in rules])
    assert used - EXPORTED == set(), "alert rules use metrics the code does not export"


def test_dashboard_loads_and_uses_only_exported_metrics() -> None:
    dashboard = json.loads((OPS / "grafana-dashboard.json").read_text())
    targets = [t for panel in dashboard["panels"] for t in panel["targets"]]
    assert targets
    variables = [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = _used([t["expr"] for t in targets] + variables)
    assert used - EXPORTED == set(), "the dashboard uses metrics the code does not export"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
