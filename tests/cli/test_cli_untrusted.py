"""An outsider's text (an alert's labels) never becomes shell code unless the runbook says why.

Through the real `cairn validate` and a real `cairn serve` fed over HTTP: `| unquoted` on an
alert's text is refused unless the step gives `allow_unquoted: <reason>`; at run time a label
that starts with `-` may not begin a word of a command (it would be an option).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.core.journal_read import StepRecord
from tests.cli.conftest import Served, alert, runs, wait_for, webhook
from tests.conftest import CairnRunner, RunbookDir

UNQUOTED = """
id: alert-unquoted
title: Puts an alert's label into a command
severity: warning
summary: The label becomes shell code; validate must ask why.
triggers:
  - matchers: ['alertname = Hostile']
    target: "{{ alert.labels.node }}"
targets: web
detect:
  - id: echo_label
    title: Echo the label as shell text
    run: echo {{ alert.labels.cmd | unquoted }}
"""


@pytest.mark.cli
def test_validate_refuses_unquoted_on_an_alerts_text_without_a_reason(
    cairn: CairnRunner, runbook_dir: RunbookDir
) -> None:
    folder = runbook_dir(UNQUOTED)
    done = cairn("validate", str(folder))
    assert done.returncode == 1, done.stdout
    path = folder / "alert-unquoted.yaml"
    assert (
        f"{path}:12:10: [/detect/0/run] template gives | unquoted alert (its labels and annotations: "
        "whoever sends the alert sets them): it would run as shell code; drop | unquoted (the value is "
        'then one quoted argument), or say why the step must in allow_unquoted: "<the reason>"'
    ) in done.stdout

    allowed = runbook_dir(
        UNQUOTED + "    allow_unquoted: the label is a command our own Alertmanager rule sets\n", name="ok"
    )
    done = cairn("validate", str(allowed))
    assert done.returncode == 0, done.stdout
    # Whoever approves or reads the step is told an outsider's text runs as shell there, and why.
    shown = cairn("show", "alert-unquoted", "--runbooks", str(allowed))
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())  # reflowed to the terminal's width
    assert "Runs an outsider's text as shell: the label is a command our own Alertmanager rule sets" in text


SERVED = """
id: alert-words
title: Uses an alert's labels in commands
severity: warning
summary: One step allows an outsider's shell text (and says why); the others quote it.
triggers:
  - matchers: ['alertname = Hostile']
    target: "{{ alert.labels.node }}"
targets: web
detect:
  - id: quoted
    title: The label as one argument
    run: printf '<%s>\\n' {{ alert.labels.cmd }}
  - id: allowed
    title: The label as shell text, allowed
    run: echo {{ alert.labels.cmd | unquoted }}
    allow_unquoted: this test sends the alert itself
  - id: as_option
    title: A label where a word begins
    run: ls {{ alert.labels.path }}
  - id: after_dashes
    title: The same label after --
    run: printf -- '<%s>\\n' {{ alert.labels.path }}
"""


@pytest.mark.cli
def test_serve_runs_an_allowed_step_and_refuses_a_label_that_would_be_an_option(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    served = serve(runbook=SERVED)
    owned = Path(f"/tmp/owned-{uuid.uuid4().hex[:8]}")
    try:
        fired = alert(alertname="Hostile", node="web-1", cmd=f"x; touch {owned}", path="-la")
        code, body = served.post(webhook(fired))
        assert code == 200 and len(body["queued"]) == 1, body
        [run] = wait_for(
            lambda: [r for r in runs(served.journal) if r.status.value == "finished"], "the run to finish"
        )
        steps: dict[str, StepRecord] = {s.step_id: s for s in run.steps}
        assert (steps["quoted"].status, steps["quoted"].stdout) == ("ok", f"<x; touch {owned}>\n")
        # The runbook's author allowed the label as shell text, and said why: it runs as shell text.
        assert steps["allowed"].status == "ok"
        assert owned.exists(), "allow_unquoted is honoured: the outsider's text ran (the author accepted it)"
        assert steps["as_option"].status == "error"
        assert steps["as_option"].message == (
            "step 'as_option' run: -la comes from an alert (an outsider's text) and starts with '-': where "
            "it begins a word the command would read it as an option; put -- before it (rm -- {{ … }}) "
            "or join it to its option (--name={{ … }})"
        )
        assert steps["as_option"].rc is None and steps["as_option"].command == "", "nothing ran"
        assert (steps["after_dashes"].status, steps["after_dashes"].stdout) == ("ok", "<-la>\n")
    finally:
        owned.unlink(missing_ok=True)
