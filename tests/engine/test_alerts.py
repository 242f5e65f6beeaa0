"""engine/core/alerts.py: Alertmanager webhooks (real captured payloads), Alertmanager's matchers, routing to runbooks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.core import expr
from engine.core.alerts import Alert, AlertStatus, Matcher, Op, WebhookError, parse_webhook, route
from engine.core.loader import load_library
from engine.core.model import Runbook
from tests.conftest import FIXTURES

PAYLOADS = FIXTURES / "alertmanager"


def payload(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / name).read_text(encoding="utf-8"))
    return data


def alert(status: str = "firing", **labels: str) -> Alert:
    return Alert(status=AlertStatus(status), labels=labels, annotations={}, fingerprint="f00d")


# ---------------------------------------------------------------------------- the payload


def test_a_real_firing_webhook_is_read() -> None:
    hook = parse_webhook((PAYLOADS / "firing.json").read_bytes())
    assert hook.receiver == "runbook"
    assert hook.group_key == '{}:{alertname="HighLatency"}'
    [one] = hook.alerts
    assert one.status is AlertStatus.FIRING
    assert one.fingerprint == "c0211f15d185d62a"
    assert one.labels == {
        "alertname": "HighLatency",
        "instance": "web-1:9100",
        "runbook": "nginx_shift",
        "severity": "critical",
    }
    assert one.annotations["summary"] == "p99 latency > 2s"
    assert one.starts_at == "2026-11-28T01:04:51.284638666Z"


def test_a_real_resolved_webhook_is_read() -> None:
    [one] = parse_webhook((PAYLOADS / "resolved.json").read_bytes()).alerts
    assert one.status is AlertStatus.RESOLVED


def test_each_alert_keeps_its_own_status_in_a_mixed_group() -> None:
    body = payload("firing.json")
    resolved = payload("resolved.json")["alerts"][0] | {"fingerprint": "0ther"}
    body["alerts"].append(resolved)
    statuses = [(a.fingerprint, a.status) for a in parse_webhook(json.dumps(body)).alerts]
    assert statuses == [("c0211f15d185d62a", AlertStatus.FIRING), ("0ther", AlertStatus.RESOLVED)]


def _broken(change: Callable[[dict[str, Any]], object]) -> str:
    body = payload("firing.json")
    change(body)
    return json.dumps(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "the body is not JSON"),
        ("[1, 2]", "the body is not a JSON object"),
        (
            _broken(lambda b: b.update(version="3")),
            'expected an Alertmanager webhook with "version": "4", got \'3\'',
        ),
        (_broken(lambda b: b.pop("version")), 'with "version": "4", got None'),
        (_broken(lambda b: b.update(alerts={"a": 1})), '"alerts" must be a list'),
        (_broken(lambda b: b["alerts"].append("x")), "alerts[1] is not an object"),
        (
            _broken(lambda b: b["alerts"][0].update(status="pending")),
            'alerts[0].status must be "firing" or "resolved"',
        ),
        (
            _broken(lambda b: b["alerts"][0].pop("fingerprint")),
            "alerts[0].fingerprint must be a non-empty string",
        ),
        (_broken(lambda b: b["alerts"][0].pop("labels")), "alerts[0].labels must be an object of strings"),
        (
            _broken(lambda b: b["alerts"][0]["labels"].update(node=7)),
            "alerts[0].labels.node must be a string",
        ),
        (_broken(lambda b: b.update(receiver=["x"])), "the webhook.receiver must be a string"),
    ],
)
def test_what_is_not_a_webhook_is_refused_with_the_reason(body: str, message: str) -> None:
    with pytest.raises(WebhookError) as caught:
        parse_webhook(body)
    assert message in str(caught.value)


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(WebhookError, match="not JSON"):
        parse_webhook(b"\xff\xfe{}")


def _firing_with(**fields: str) -> str:
    """The real firing webhook's text with each ``"FIELD": VALUE`` of its first alert's labels set to raw JSON."""
    text = (PAYLOADS / "firing.json").read_text(encoding="utf-8")
    body = json.loads(text)
    body["alerts"][0]["labels"] = {key: f"@@{key}@@" for key in fields}
    text = json.dumps(body)
    for key, raw in fields.items():
        text = text.replace(f'"@@{key}@@"', raw)
    return text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[" * 50_000 + "]" * 50_000, "the body is nested deeper than 32 levels"),
        (
            '{"version": "4", "alerts": [], "x": ' + '{"a": ' * 50_000 + "1" + "}" * 50_000 + "}",
            "nested deeper",
        ),
        ("[" * 5_000 + "}" * 5_000, "nested deeper"),  # brackets that do not pair: the parser's own limit
        ("1" * 5_000, "a number in the body has 5000 digits (at most 64)"),
        ('{"version": "4", "alerts": [], "x": 1e999}', "a number in the body is too large: '1e999'"),
        ('{"version": "4", "alerts": [], "x": NaN}', "the body is not JSON: NaN is not a JSON number"),
        ('{"version": "4", "alerts": [], "x": -Infinity}', "-Infinity is not a JSON number"),
        ('{"version": "4", "version": "4", "alerts": []}', "the key 'version' appears twice in one object"),
        (
            _firing_with(node='"\\ud800"'),
            "alerts[0].labels.node holds a lone surrogate (\\ud800), which is not text",
        ),
        (_firing_with(node='"web\\u0000-1"'), "alerts[0].labels.node holds a NUL character"),
        (
            '{"version": "4", "alerts": [{"status": "firing", "fingerprint": "f", "labels": {"\\udfff": "x"}}]}',
            "a key of alerts[0].labels holds a lone surrogate",
        ),
        (
            _firing_with(node="[1, [2, [3, [4]]]]"),
            "alerts[0].labels.node must be a string, got [1, [2, [...]]]",
        ),
        (_firing_with(node="{}"), "alerts[0].labels.node must be a string, got {}"),
        (_broken(lambda b: b.update(truncatedAlerts="3")), '"truncatedAlerts" must be a whole number'),
        (_broken(lambda b: b.update(truncatedAlerts=-1)), '"truncatedAlerts" must be a whole number'),
        (_broken(lambda b: b.update(version="4" * 100_000)), "got '4444"),
        (b'{"version": "4", "alerts": [], "receiver": "caf\xe9"}', "byte 47 (0xe9) is not UTF-8"),
    ],
    ids=lambda value: str(value)[:30],
)
def test_a_hostile_body_is_refused_with_a_clear_reason(body: str | bytes, message: str) -> None:
    with pytest.raises(WebhookError) as caught:
        parse_webhook(body)
    assert message in str(caught.value)
    assert len(str(caught.value)) < 300, "the message never echoes the body"


def test_what_alertmanager_sends_is_still_read_brackets_in_text_and_emoji_included() -> None:
    body = payload("firing.json")
    body["alerts"][0]["labels"]["summary"] = "[[[[{{{{" * 20
    body["alerts"][0]["annotations"]["description"] = "disk full \N{FACE SCREAMING IN FEAR}"
    hook = parse_webhook(json.dumps(body))  # ensure_ascii: the emoji as a surrogate pair escape
    assert hook.alerts[0].labels["summary"] == "[[[[{{{{" * 20
    assert hook.alerts[0].annotations["description"].endswith("\N{FACE SCREAMING IN FEAR}")
    assert parse_webhook(b"\xef\xbb\xbf" + json.dumps(body).encode()).alerts == hook.alerts, (
        "a BOM is ignored"
    )
    nested = {"version": "4", "alerts": [], "x": json.loads("[" * 32 + "]" * 32)}
    assert parse_webhook(json.dumps(nested)).alerts == ()


# ---------------------------------------------------------------------------- matchers


@pytest.mark.parametrize(
    ("text", "label", "op", "value"),
    [
        ("alertname = KubeNodeNotReady", "alertname", Op.EQUAL, "KubeNodeNotReady"),
        ("alertname=KubeNodeNotReady", "alertname", Op.EQUAL, "KubeNodeNotReady"),
        ('severity =~ "critical|warning"', "severity", Op.REGEX, "critical|warning"),
        ("team != db", "team", Op.NOT_EQUAL, "db"),
        ('node !~ "canary-.*"', "node", Op.NOT_REGEX, "canary-.*"),
        (r'summary = "a \"quoted\" word\\n"', "summary", Op.EQUAL, 'a "quoted" word\\n'),
        (r'summary = "two\nlines"', "summary", Op.EQUAL, "two\nlines"),
        ('empty = ""', "empty", Op.EQUAL, ""),
    ],
)
def test_matchers_are_read_as_alertmanager_reads_them(text: str, label: str, op: Op, value: str) -> None:
    matcher = Matcher.parse(text)
    assert (matcher.label, matcher.op, matcher.value) == (label, op, value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alertname KubeNodeNotReady", "is not a matcher"),
        ('node =~ "(web"', "does not compile"),
        ('team = "db', "opens a quote it does not close"),
        (r'team = "d\b"', "only"),
        ('team = "a"b"', "a quote inside a quoted value"),
    ],
)
def test_a_bad_matcher_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Matcher.parse(text)


@pytest.mark.parametrize(
    ("text", "labels", "holds"),
    [
        ("alertname = KubeNodeNotReady", {"alertname": "KubeNodeNotReady"}, True),
        ("alertname = KubeNodeNotReady", {"alertname": "KubeNodeNotReadyX"}, False),
        ("team != db", {"alertname": "X"}, True),  # a missing label is "" (not "db")
        ('team = ""', {"alertname": "X"}, True),
        ('team = ""', {"team": "web"}, False),
        ('severity =~ "critical|warning"', {"severity": "warning"}, True),
        ('severity =~ "critical|warning"', {"severity": "critical-ish"}, False),  # anchored: whole value
        ('instance =~ "web"', {"instance": "web-1:9100"}, False),
        ('instance =~ "web-.*"', {"instance": "web-1:9100"}, True),
        ('node !~ "canary-.*"', {"node": "canary-3"}, False),
        ('node !~ "canary-.*"', {"node": "n1"}, True),
        ('node !~ "canary-.*"', {}, True),
        ('node =~ ".*"', {}, True),  # matches the empty string of a missing label, as in Alertmanager
        ('node =~ ".+"', {}, False),
    ],
)
def test_matchers_hold_as_in_alertmanager(text: str, labels: dict[str, str], holds: bool) -> None:
    assert Matcher.parse(text).matches(labels) is holds


# ---------------------------------------------------------------------------- routing

NODE = """
id: node-down
title: A node stops answering
severity: critical
summary: s
triggers:
  - matchers: ['alertname = KubeNodeNotReady', 'severity =~ "critical|warning"']
    target: "{{ alert.labels.node }}"
  - matchers: ['alertname = NodeExporterDown']
    target: "{{ alert.labels.instance | regex_replace(':[0-9]+$', '') }}"
detect:
  - id: ping
    title: Ping it
    run: ping -c 1 {{ target }}
"""

OTHER = """
id: disk-full
title: Disk full
severity: warning
summary: s
triggers:
  - matchers: ['alertname = DiskFull']
    target: "{{ alert.labels.node }}"
detect:
  - id: df
    title: df
    run: df -h
"""


@pytest.fixture
def runbooks(runbook_dir: Callable[..., Path]) -> list[Runbook]:
    library = load_library([runbook_dir(NODE, OTHER)])
    found = [r.runbook for r in library.results if r.runbook is not None]
    assert len(found) == 2, [str(p) for r in library.results for p in r.problems]
    return found


def test_an_alert_starts_the_runbooks_whose_trigger_matches_on_the_host_it_names(
    runbooks: list[Runbook],
) -> None:
    [one] = route(runbooks, alert(alertname="KubeNodeNotReady", severity="critical", node="n1"))
    assert (one.runbook_id, one.trigger, one.target, one.problem) == ("node-down", 0, "n1", "")
    assert one.key == ("node-down", "n1")

    [other] = route(runbooks, alert(alertname="NodeExporterDown", instance="n2:9100"))
    assert (other.runbook_id, other.trigger, other.target) == ("node-down", 1, "n2")

    assert route(runbooks, alert(alertname="KubeNodeNotReady", severity="info", node="n1")) == []
    assert [r.runbook_id for r in route(runbooks, alert(alertname="DiskFull", node="n3"))] == ["disk-full"]


def test_a_label_value_is_data_never_code(runbooks: list[Runbook]) -> None:
    hostile = "n1; touch /tmp/owned"
    [one] = route(runbooks, alert(alertname="KubeNodeNotReady", severity="critical", node=hostile))
    assert one.target == hostile  # the name, exactly as the alert says it (the inventory has no such host)
    command = expr.render_command("ping -c 1 {{ target }}", {"target": one.target})
    assert command == "ping -c 1 'n1; touch /tmp/owned'"


def test_an_alert_without_the_label_the_target_needs_says_so(runbooks: list[Runbook]) -> None:
    [one] = route(runbooks, alert(alertname="KubeNodeNotReady", severity="critical"))
    assert one.target == ""
    assert "cannot be rendered for this alert" in one.problem
    assert "has no attribute 'node'" in one.problem
    assert "its labels: {'alertname': 'KubeNodeNotReady', 'severity': 'critical'}" in one.problem


def test_a_target_that_renders_empty_says_so(runbooks: list[Runbook]) -> None:
    [one] = route(runbooks, alert(alertname="KubeNodeNotReady", severity="critical", node="  "))
    assert one.target == ""
    assert "is empty for this alert" in one.problem
