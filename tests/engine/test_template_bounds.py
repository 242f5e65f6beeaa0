"""Templates are bounded: time (never past the step's timeout), output, what they build; a cancel stops them.

Hostile templates from the adversarial review (issue 15) are refused with a clear message, before
they allocate, and in every kind of template; ordinary templates render as before. The last tests
drive the real `cairn run` and `cairn validate`.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.core import expr
from engine.core.errors import TemplateError
from engine.core.template_bounds import (
    MAX_COMMAND_BYTES,
    MAX_ITEMS,
    MAX_OUTPUT_CHARS,
    MAX_RENDER_SECONDS,
    RenderCancelled,
    RenderPolicy,
    RenderTimeout,
    rendering,
)
from tests.cli.conftest import wait_for
from tests.conftest import CairnRunner, RunbookDir, cairn_command

NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
LIVENESS = 60.0  # seconds a bounded render is given before the test calls it unbounded


def finish(call: Callable[[], Any]) -> BaseException | Any:
    """``call()`` in a thread: its result or exception; fails if it is still going after LIVENESS."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(LIVENESS)
    assert not thread.is_alive(), "the render is unbounded: still running"
    return outcome[0]


def refused(call: Callable[[], Any]) -> str:
    """The TemplateError message ``call`` fails with (within LIVENESS)."""
    result = finish(call)
    assert isinstance(result, TemplateError), f"not refused: {str(result)[:200]!r}"
    return str(result)


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize(
    ("render", "field"),
    [
        (lambda: expr.render_command("echo " + NESTED, {}, step_id="kill_old"), "run"),
        (lambda: expr.render_text(NESTED, {}, step_id="kill_old", field="manual"), "manual"),
        (
            lambda: expr.render_data({"a": [NESTED]}, {}, step_id="kill_old", field="ansible.args"),
            "ansible.args",
        ),
    ],
)
def test_a_render_that_takes_too_long_is_stopped_with_the_limit(
    render: Callable[[], Any], field: str
) -> None:
    message = refused(render)
    assert message == (
        f"step 'kill_old' {field}: rendering took longer than {MAX_RENDER_SECONDS:g} s (the limit for a "
        "template); nothing ran: look for a loop over a large range, loops inside loops, or a macro that "
        "calls itself"
    )


def test_a_macro_calling_itself_twice_is_stopped() -> None:
    source = "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}"
    message = refused(lambda: expr.render_text(source, {}, step_id="s", field="manual"))
    assert "took longer than" in message or "builds more than" in message


def test_the_step_timeout_is_the_deadline_when_it_is_shorter() -> None:
    def render() -> str:
        with rendering(RenderPolicy(timeout=0.3)):  # a policy holds for the thread that sets it
            return expr.render_command("echo " + NESTED, {}, step_id="s")

    result = finish(render)
    assert isinstance(result, RenderTimeout)
    assert result.step_timeout
    assert (
        str(result) == "step 's' run: timed out after 0.3 s (the step's timeout) while rendering; nothing ran"
    )


def test_a_cancel_stops_a_render_promptly() -> None:
    cancel = threading.Event()
    started = threading.Event()

    def render() -> str:
        with rendering(RenderPolicy(timeout=3600, cancel=cancel)):
            started.set()
            return expr.render_text(NESTED, {}, step_id="s", field="manual")

    def cancel_soon() -> None:
        started.wait(LIVENESS)
        cancel.set()

    threading.Thread(target=cancel_soon, daemon=True).start()
    result = finish(render)
    assert isinstance(result, RenderCancelled)
    assert str(result) == "step 's' manual: cancelled while rendering; nothing ran"


def test_a_cancelled_run_renders_nothing_more() -> None:
    cancel = threading.Event()
    cancel.set()
    with rendering(RenderPolicy(cancel=cancel)), pytest.raises(RenderCancelled):
        expr.render_command("echo {{ 1 + 1 }}", {}, step_id="s")


# --------------------------------------------------------------------------- size


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("('a' * 10**9) | length", "would be 953.674 MiB"),
        ("'a' * 10**9", "would be 953.674 MiB"),
        ("10 ** (10 ** 10)", "digits, more than a template may compute"),
        ("2 ** 100000000", "digits, more than a template may compute"),
        ("'%1000000000s' % 'x'", "would be 953.674 MiB"),
        ("'%(a)s' * 100000 % {'a': 'x' * 1000}", "more than a template may build"),
        ("'%*s' % (10**9, 'x')", "would be 953.674 MiB"),
        ("'{:1000000000}'.format('x')", "more than a template may build"),
        ("'{:{}}'.format('x', 10**9)", "more than a template may build"),
        ("'{0}{0}{0}{0}'.format('y' * 3000000)", "more than a template may build"),
        ("'x' | center(10**9)", "more than a template may build"),
        (
            "'x' | center(1000000000)",
            "more than a template may build",
        ),  # a constant: never folded at compile time
        ("'x'.ljust(10**9)", "more than a template may build"),
        ("'x'.zfill(10**9)", "more than a template may build"),
        ("'a\tb'.expandtabs(10**9)", "more than a template may build"),
        ("('a' * 1000000).replace('a', 'b' * 1000)", "more than a template may build"),
        ("('a' * 1000000) | replace('a', 'b' * 1000)", "more than a template may build"),
        ("('a' * 1000000) | regex_replace('', 'b' * 1000)", "more than a template may build"),
        ("'x\ny' | indent(10**9)", "more than a template may build"),
        ("'x' | format() ~ ('%1000000000d' | format(1))", "more than a template may build"),
        ("([1] | batch(10**9, 0) | list) | length", "items, more than a template may build"),
        ("([1] | slice(10**9) | list) | length", "items, more than a template may build"),
        ("(1).to_bytes(10**9, 'big') | length", "more than a template may build"),
        ("(['y' * 1000000] * 100000) | join | length", "more than a template may build"),
        ("'-'.join(['y' * 1000000] * 100000) | length", "more than a template may build"),
        ("(['y' * 1000000] * 100000) | string | length", "more than a template may build"),
        ("(['y' * 1000000] * 100000) | to_json | length", "more than a template may build"),
        ("(['y' * 1000000] * 100000) | tojson | length", "more than a template may build"),
        ("(('y' * 1000000) ~ ('y' * 8000000)) | length", "more than a template may build"),
        ("(('y' * 8000000) | list) | length", "items, more than a template may build"),
        ("[1] * 10**9", "items, more than a template may build"),
    ],
)
def test_building_too_much_is_refused_before_it_is_built(source: str, words: str) -> None:
    message = refused(lambda: expr.evaluate(source, {}, step_id="s", field="when"))
    assert message.startswith("step 's' when: "), message
    assert words in message, message


def test_lipsum_and_other_text_generators_are_gone() -> None:
    message = refused(lambda: expr.render_text("{{ lipsum(1000000) }}", {}, step_id="s", field="manual"))
    assert "'lipsum' is undefined" in message


def test_adding_to_a_text_in_a_loop_is_bounded_by_all_it_builds() -> None:
    source = (
        "{% set ns = namespace(s='') %}{% for i in range(100000) %}"
        "{% set ns.s = ns.s ~ ('y' * 100000) %}{% endfor %}{{ ns.s | length }}"
    )
    message = refused(lambda: expr.render_text(source, {}, step_id="s", field="report"))
    assert "more than" in message


def test_a_list_of_one_big_text_many_times_cannot_become_a_command() -> None:
    message = refused(lambda: expr.render_command("echo {{ ['y' * 1000000] * 100000 }}", {}, step_id="s"))
    assert "step 's' run: " in message and "more than" in message


def test_a_command_larger_than_the_limit_is_a_clean_render_error() -> None:
    message = refused(lambda: expr.render_command("echo {{ 'a' * 300000000 }}", {}, step_id="big"))
    assert message.startswith("step 'big' run: "), message
    message = refused(lambda: expr.render_command("echo {{ 'a' * 70000 }}", {}, step_id="big"))
    assert f"longer than {MAX_COMMAND_BYTES:,} bytes" in message
    assert expr.render_command("echo {{ 'a' * 60000 }}", {}) == "echo " + "a" * 60000


def test_text_output_is_bounded_and_stops_early() -> None:
    source = "{% for i in range(100000) %}{{ 'z' * 100 }}{% endfor %}"
    message = refused(lambda: expr.render_text(source, {}, step_id="s", field="manual"))
    assert f"longer than {MAX_OUTPUT_CHARS:,} characters" in message
    block = "{% set x %}" + source + "{% endset %}{{ x | length }}"
    assert "more than" in refused(lambda: expr.render_text(block, {}, step_id="s", field="manual"))


def test_ansible_args_are_bounded_too() -> None:
    message = refused(
        lambda: expr.render_data(
            {"cmd": ["{{ 'x' | center(10**9) }}"]}, {}, step_id="s", field="ansible.args"
        )
    )
    assert message.startswith("step 's' ansible.args: ")


def test_a_deep_recursion_is_a_clean_error() -> None:
    source = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"
    message = refused(lambda: expr.render_text(source, {}, step_id="s", field="manual"))
    assert "calls itself too deeply" in message


# --------------------------------------------------------------------------- ordinary templates still work


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("range(1000) | sum", 499500),
        ("'%5.1f' % 3.14159", "  3.1"),
        ("'{:>6}'.format('x')", "     x"),
        ("'x' | center(5)", "  x  "),
        ("'ab' * 3", "ababab"),
        ("[1, 2] * 2", [1, 2, 1, 2]),
        ("2 ** 64", 2**64),
        ("'a-b-c'.split('-') | join('+')", "a+b+c"),
        ("'abcdef'[1:4]", "bcd"),
        ("'abcdef'[::-1]", "fedcba"),
        ("'a' ~ 1 ~ none", "a1None"),
        ("range(10) | batch(3) | list | length", 4),
        ("range(300000) | list | length", 300000 if MAX_ITEMS >= 300000 else "refused"),
        ("out | selectattr('n', 'gt', 1) | map(attribute='name') | join(',')", "b,c"),
        ("'x\ny' | indent(2, first=true)", "  x\n  y"),
        ("'%s-%s' | format('a', 'b')", "a-b"),
        ("'aXbXc' | regex_replace('X', '\\\\g<0>\\\\g<0>')", "aXXbXXc"),
        ("'a1b22c333' | regex_findall('[0-9]+')", ["1", "22", "333"]),
        ("'k=v; k2=v2' | regex_findall('(\\\\w+)=(\\\\w+)')", [("k", "v"), ("k2", "v2")]),
    ],
)
def test_ordinary_templates_render_as_before(source: str, value: Any) -> None:
    context = {"out": [{"name": "a", "n": 1}, {"name": "b", "n": 2}, {"name": "c", "n": 3}]}
    if value == "refused":
        assert isinstance(finish(lambda: expr.evaluate(source, context)), TemplateError)
    else:
        assert expr.evaluate(source, context) == value


def test_loops_and_loop_variables_still_work() -> None:
    source = (
        "{% for x in items %}{{ loop.index }}/{{ loop.length }}{{ ',' if not loop.last }}{% endfor %}"
        "|{% for x in items if x > 1 %}{{ x }}{% else %}none{% endfor %}"
        "|{% for x in tree recursive %}{{ x.n }}{% if x.c %}({{ loop(x.c) }}){% endif %}{% endfor %}"
    )
    tree = [{"n": 1, "c": [{"n": 2, "c": []}]}]
    assert expr.render_text(source, {"items": [1, 2, 3], "tree": tree}) == "1/3,2/3,3/3|23|1(2)"


# --------------------------------------------------------------------------- through `cairn run` and `cairn validate`

HOSTILE = f"""
id: hostile-templates
title: Templates that would not end
severity: info
summary: Each step's template is hostile, in the open; cairn validate names each with its line.
detect:
  - id: first
    title: a harmless first step
    run: echo first
  - id: kill_old
    title: a nested loop, with a short timeout
    run: echo {NESTED}
    timeout: 1s
  - id: huge
    title: a gigabyte of text
    run: echo {{{{ ('a' * 10**9) | length }}}}
  - id: generated
    title: generated text
    run: echo {{{{ lipsum(1000000) }}}}
  - id: big_command
    title: a 300 MB command
    run: echo {{{{ 'a' * 300000000 }}}}
"""

# The same, with the sizes given as inputs: validate cannot see them, the run must stop each step.
AT_RUN_TIME = """
id: hostile-at-run-time
title: Templates that would not end, sized by inputs
severity: info
summary: Each step's template is hostile once its inputs are known; the run must end anyway.
inputs:
  n: {type: integer, default: 100000}
  big: {type: integer, default: 1000000000}
  command_size: {type: integer, default: 300000000}
  marker: {type: string, default: ""}
detect:
  - id: first
    title: a harmless first step
    run: echo first{% if inputs.marker %} > {{ inputs.marker }}{% endif %}
  - id: kill_old
    title: a nested loop, with a short timeout
    run: echo {% for i in range(inputs.n) %}{% for j in range(inputs.n) %}{% endfor %}{% endfor %}
    timeout: 1s
  - id: slow
    title: the same nested loop, with the default timeout
    run: echo {% for i in range(inputs.n) %}{% for j in range(inputs.n) %}{% endfor %}{% endfor %}
  - id: huge
    title: a gigabyte of text
    run: echo {{ ('a' * inputs.big) | length }}
  - id: big_command
    title: a 300 MB command
    run: echo {{ 'a' * inputs.command_size }}
  - id: last
    title: a harmless last step
    run: echo last
"""


def _children_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


@pytest.mark.cli
def test_cairn_run_ends_every_hostile_step_with_its_error_in_bounded_memory(runbook_dir: RunbookDir) -> None:
    folder = runbook_dir(AT_RUN_TIME)
    with subprocess.Popen(
        [*cairn_command(), "run", "hostile-at-run-time", "--runbooks", str(folder), "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        out, err = proc.communicate(timeout=120)  # liveness only: unbounded, it runs for many minutes
    assert proc.returncode == 2, out + err
    assert _children_peak_rss_mb() < 500, "the templates were refused before they allocated"
    report = json.loads(out)
    results = {r["step_id"]: r for r in report["hosts"][0]["results"]}
    assert (results["first"]["status"], results["last"]["status"]) == ("ok", "ok")
    assert (results["kill_old"]["status"], results["kill_old"]["message"]) == (
        "timeout",
        "step 'kill_old' run: timed out after 1 s (the step's timeout) while rendering; nothing ran",
    )
    assert results["slow"]["status"] == "error"
    assert (
        f"rendering took longer than {MAX_RENDER_SECONDS:g} s (the limit for a template)"
        in results["slow"]["message"]
    )
    assert results["huge"]["status"] == "error"
    assert results["huge"]["message"] == (
        "step 'huge' run: 'a' * 1000000000 would be 953.674 MiB, more than a template may build (8 MiB)"
    )
    assert results["big_command"]["message"] == (
        "step 'big_command' run: 'a' * 300000000 would be 286.102 MiB, more than a template may build (8 MiB)"
    )
    assert "Traceback" not in err and "internal error" not in out + err


@pytest.mark.cli
def test_a_command_just_past_the_limit_is_a_step_error_not_an_argument_list_too_long(
    runbook_dir: RunbookDir,
) -> None:
    folder = runbook_dir(AT_RUN_TIME)
    done = subprocess.run(
        [
            *cairn_command(),
            "run",
            "hostile-at-run-time",
            "--runbooks",
            str(folder),
            "--json",
            "-e",
            "n=1",
            "-e",
            "big=1",
            "-e",
            "command_size=200000",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    results = {r["step_id"]: r for r in json.loads(done.stdout)["hosts"][0]["results"]}
    assert results["big_command"]["status"] == "error"
    assert results["big_command"]["message"].startswith(
        f"step 'big_command' run: the rendered command is longer than {MAX_COMMAND_BYTES:,} bytes"
    )
    assert "Argument list too long" not in done.stdout + done.stderr


@pytest.mark.cli
def test_sigterm_stops_a_run_stuck_in_a_render(runbook_dir: RunbookDir, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    folder = runbook_dir(AT_RUN_TIME.replace("timeout: 1s", "timeout: 1h"))
    with subprocess.Popen(
        [*cairn_command(), "run", "hostile-at-run-time", "--runbooks", str(folder), "-e", f"marker={marker}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            wait_for(marker.exists, "the first step to run")  # the next one renders for long
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=LIVENESS)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    history = subprocess.run(
        [*cairn_command(), "history", "--json"], capture_output=True, text=True, check=True
    )
    (run,) = json.loads(history.stdout)
    assert run["status"] == "interrupted"
    shown = subprocess.run(
        [*cairn_command(), "show-run", run["id"]], capture_output=True, text=True, check=True
    )
    assert "cancelled while rendering; nothing ran" in shown.stdout


@pytest.mark.cli
def test_cairn_validate_reports_hostile_templates_with_file_and_line(
    cairn: CairnRunner, runbook_dir: RunbookDir
) -> None:
    folder = runbook_dir(HOSTILE)
    done = cairn("validate", str(folder))
    assert done.returncode == 1, done.stdout
    path = folder / "hostile-templates.yaml"
    lines = {
        line.split(": [", 1)[1].split("]", 1)[0]: line for line in done.stdout.splitlines() if ": [" in line
    }
    assert lines["/detect/1/run"].startswith(f"{path}:11:")
    assert "has loops that would run 10,000,000,000 times" in lines["/detect/1/run"]
    assert lines["/detect/2/run"].startswith(f"{path}:15:")
    assert "builds too much when it runs: 'a' * 1000000000 would be 953.674 MiB" in lines["/detect/2/run"]
    assert lines["/detect/3/run"].startswith(f"{path}:18:")
    assert "unknown variable 'lipsum'" in lines["/detect/3/run"]
    assert "'a' * 300000000 would be 286.102 MiB" in lines["/detect/4/run"]
    assert cairn("validate", str(runbook_dir(AT_RUN_TIME, name="later"))).returncode == 0


def test_time_spent_waiting_for_a_turn_is_not_counted_against_a_template(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """500 hosts are 500 threads taking turns at the interpreter: a trivial render that waited 5 s by
    the clock for its turn, using almost no CPU, is rendered — the 2 s limit is the render's own CPU."""
    clock = time.monotonic
    waited = {"calls": 0}

    def slow_clock() -> float:  # every reading after the budget's start is 5 s later than the real clock
        waited["calls"] += 1
        return clock() + (5.0 if waited["calls"] > 1 else 0.0)

    monkeypatch.setattr(time, "monotonic", slow_clock)  # the clock template_bounds reads
    text = expr.render_text(
        "{% for i in range(3) %}{{ i }}{% endfor %} uname -r", {}, step_id="s", field="run"
    )
    assert text == "012 uname -r"
    assert waited["calls"] > 1  # the render did look at the clock
