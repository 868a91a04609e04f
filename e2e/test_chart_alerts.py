"""The chart's alert rules, rendered by the real Helm engine: `promtool check rules` accepts them, `promtool test
rules` proves each alert fires and stays quiet when it should (e2e/chart/alerts_test.yaml), every alert says what
happened, why it matters and where the runbook is, and thresholds come from the values."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

from chart_support import ROOT, rule_groups

TESTS = pathlib.Path(__file__).resolve().parent / "chart" / "alerts_test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"


def alerts(groups: dict) -> list[dict]:
    return [r for g in groups["groups"] for r in g["rules"] if "alert" in r]


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("rules")
    (d / "rules.yaml").write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
    shutil.copy(TESTS, d / TESTS.name)
    return d


def test_promtool_accepts_the_rules(rules_dir):
    out = subprocess.run(["promtool", "check", "rules", "rules.yaml"], cwd=rules_dir, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts(rule_groups()))} rules found" in out.stdout, out.stdout


def test_promtool_unit_tests_pass(rules_dir):
    out = subprocess.run(["promtool", "test", "rules", TESTS.name], cwd=rules_dir, capture_output=True, text=True)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_every_alert_has_a_firing_and_a_quiet_case():
    tests = yaml.safe_load(TESTS.read_text())["tests"]
    firing, quiet = set(), set()
    for group in tests:
        for case in group["alert_rule_test"]:
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    # A quiet case is either an explicit empty expectation or a firing case whose input includes series that must
    # not alert (the expectation lists exactly which labels fire).
    names = {a["alert"] for a in alerts(rule_groups())}
    assert firing == names, names - firing
    groups_with_other_series = {
        case["alertname"] for group in tests for case in group["alert_rule_test"]
        if case["exp_alerts"] and len(group["input_series"]) > len(case["exp_alerts"])
    }
    assert names <= quiet | groups_with_other_series, names - quiet - groups_with_other_series


def test_the_unit_tests_can_fail(rules_dir):
    """A rule that alerts on everything makes promtool report the unexpected alert: the tests are not vacuous."""
    broken = yaml.safe_load((rules_dir / "rules.yaml").read_text())
    for g in broken["groups"]:
        for r in g["rules"]:
            if r.get("alert") == "SensorPipelineDeadLettersHigh":
                r["expr"] = r["expr"].replace("> 0.05", "> 0")
    d = rules_dir / "broken"
    d.mkdir(exist_ok=True)
    (d / "rules.yaml").write_text(yaml.safe_dump(broken, sort_keys=False))
    shutil.copy(TESTS, d / TESTS.name)
    out = subprocess.run(["promtool", "test", "rules", TESTS.name], cwd=d, capture_output=True, text=True)
    assert out.returncode != 0 and 'pipeline="good-feed"' in out.stdout + out.stderr, out.stdout + out.stderr


def test_every_alert_says_what_why_and_where_the_runbook_is():
    anchors = {re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
               for h in re.findall(r"^## (.+)$", RUNBOOKS.read_text(), re.M)}
    for alert in alerts(rule_groups()):
        name, ann = alert["alert"], alert["annotations"]
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}, name
        assert len(ann["summary"]) > 20 and len(ann["description"]) > 60, name
        url = ann["runbook_url"]
        assert url.startswith("https://github.com/sensorpipe/sensorpipe/blob/main/docs/runbooks.md#"), url
        assert url.split("#", 1)[1] in anchors, f"{name}: no section {url} in docs/runbooks.md"


def test_thresholds_and_labels_come_from_the_values():
    values = yaml.safe_load((ROOT / "charts" / "sensorpipe" / "ci" / "monitoring-values.yaml").read_text())
    rules = {a["alert"]: a for a in alerts(rule_groups(values))}
    assert "> 50000" in rules["SensorPipelineLagGrowing"]["expr"]
    assert rules["SensorPipelineLagGrowing"]["for"] == "5m"
    assert "> 120" in rules["SensorPipelineLagTooOld"]["expr"]
    assert "> 0.01" in rules["SensorPipelineDeadLettersHigh"]["expr"]
    assert all(r["labels"]["team"] == "facilities" for r in rules.values())
    custom = alerts(rule_groups({"monitoring": {"prometheusRule": {
        "runbookUrl": "https://wiki.example.com/sensorpipe"}}}))
    assert all(a["annotations"]["runbook_url"].startswith("https://wiki.example.com/sensorpipe#") for a in custom)
