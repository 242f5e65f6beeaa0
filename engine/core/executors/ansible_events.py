"""ansible-runner's events, as they arrive, turned into what a step saw (a :class:`CommandResult`).

:class:`Job` is the ``event_handler`` of one ansible-runner call: it drops ``task_args`` and
``invocation`` (rendered arguments), redacts every string, cuts long texts at the output
limit — all before ansible-runner writes the event to the artifacts — and keeps the results
and lines for our host. :func:`task_result` and :func:`playbook_result` make the step's
result of them; a host Ansible could not reach is an :class:`ExecutorError`
(:func:`raise_for_host`, :func:`describe_unreachable`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.core.defaults import OUTPUT_LIMIT
from engine.core.errors import ExecutorError
from engine.core.executors import OutputCallback, Redact
from engine.core.executors.streams import bounded_event, truncation_marker
from engine.core.model import CommandResult, Host

_RESULTS = {"runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_skipped": "skipped"}
_CAUSES = (  # (words in ssh's message, what they mean), first match wins
    (("identification has changed",), "the host key has CHANGED since known_hosts recorded it "
     "(reinstalled host, or someone in the middle)"),
    (("host key verification failed",), "host key verification failed, the host key is not known "
     "(add it to known_hosts, e.g. with ssh-keyscan, or use --accept-new-host-keys)"),
    (("permission denied",), "authentication failed (permission denied)"),
    (("connection refused",), "connection refused"),
    (("timed out",), "connection timed out"),
)  # fmt: skip


def map_strings(value: Any, change: Callable[[str], str]) -> Any:
    """``value`` with ``change`` applied to every string in it, dict keys included."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {map_strings(k, change): map_strings(v, change) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [map_strings(v, change) for v in value]
    return value


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty one (events are JSON from another process)."""
    return value if isinstance(value, dict) else {}


@dataclass
class TaskResult:
    """One task's result on our host."""

    task: str
    status: str
    """ok, changed, failed or skipped."""
    res: dict[str, Any]
    text: str
    """Ansible's line for it, e.g. ``changed: [node1]``."""
    ignored: bool = False


@dataclass
class Job:
    """One ansible-runner call: what its events said about our host (fed from its thread)."""

    host: str
    on_output: OutputCallback | None
    redact: Redact | None
    stream_events: bool
    """Forward every event's text; otherwise only the command's output, when the result arrives."""
    limit: int = OUTPUT_LIMIT
    """Characters of a module's stdout or stderr, of an event's text, and of all lines, kept."""
    results: list[TaskResult] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    kept: int = 0
    """Characters in ``lines``."""
    dropped: int = 0
    """Characters of event text not kept in ``lines`` (beyond ``limit``)."""
    stats: dict[str, Any] = field(default_factory=dict)
    unreachable: str | None = None
    failure: BaseException | None = None
    abort: threading.Event = field(default_factory=threading.Event)

    def handle(self, event: dict[str, Any]) -> bool:
        """ansible-runner's ``event_handler``; True: the (scrubbed) event is still written to artifacts."""
        try:
            self._handle(event)
        except Exception as exc:  # a failing subscriber: stop the job, re-raise in the caller's thread
            self.failure = self.failure or exc
            self.abort.set()
        return True

    def _handle(self, event: dict[str, Any]) -> None:
        data = as_dict(event.get("event_data"))
        data.pop("task_args", None)
        res = as_dict(data.get("res"))
        for part in [res, *(r for r in res.get("results") or () if isinstance(r, dict))]:
            part.pop("invocation", None)
        if self.redact is not None:  # the handler's event is the one written to job_events
            for key in list(event):
                event[key] = map_strings(event[key], self.redact)
        bounded_event(event, self.limit)  # redacted first: a cut cannot leave half a secret
        data = as_dict(event.get("event_data"))
        res = as_dict(data.get("res"))
        text = str(event.get("stdout") or "").replace("\r\n", "\n").strip("\n")
        if text:
            self._keep_line(text)
            if self.stream_events and self.on_output is not None:
                self.on_output("stdout", text + "\n")
        kind = event.get("event")
        if kind == "playbook_on_stats":
            self.stats = data
        elif data.get("host") != self.host:
            return
        elif kind == "runner_on_unreachable":
            self.unreachable = str(res.get("msg") or text)
        elif kind in _RESULTS:
            status = "changed" if kind == "runner_on_ok" and res.get("changed") else _RESULTS[kind]
            task = str(data.get("task", ""))
            self.results.append(TaskResult(task, status, res, text, bool(data.get("ignore_errors"))))
            if self.stream_events or self.on_output is None:
                return
            for stream in ("stdout", "stderr"):
                if res.get(stream):
                    self.on_output(stream, str(res[stream]))

    def _keep_line(self, text: str) -> None:
        if self.kept + len(text) > self.limit:
            self.dropped += len(text)
            return
        self.lines.append(text)
        self.kept += len(text)

    def text(self) -> str:
        """The lines kept, and a marker when some were not."""
        kept = "\n".join(self.lines)
        if not self.dropped:
            return kept
        return (
            f"{kept}\n{truncation_marker('ansible output', self.kept, self.kept + self.dropped, self.limit)}"
        )


@dataclass(frozen=True)
class Outcome:
    """How ansible-playbook ended."""

    status: str
    """ansible-runner's: successful, failed, timeout or canceled."""
    rc: int | None
    duration: float


def task_result(host: Host, job: Job, outcome: Outcome, *, msg_in_stderr: bool) -> CommandResult:
    """What a one-task play did on ``host``: its module's rc, stdout, stderr and result."""
    raise_for_host(host, job, outcome)
    ended = {"timed_out": outcome.status == "timeout", "cancelled": outcome.status == "canceled"}
    if not job.results:  # killed before the result, or ansible's own error (unknown module …)
        rc = None if any(ended.values()) else (outcome.rc or 0)
        return CommandResult(rc, "", job.text() if rc else "", outcome.duration, **ended)
    result = job.results[-1]
    res = result.res
    has_rc = isinstance(res.get("rc"), int)
    stderr, msg = str(res.get("stderr") or ""), str(res.get("msg") or "")
    if result.status == "failed" and msg and (msg_in_stderr or not has_rc):
        stderr = f"{stderr.rstrip()}\n{msg}".lstrip("\n")
    data = {k: v for k, v in res.items() if not k.startswith("_ansible") and k != "invocation"}
    data["changed"] = bool(res.get("changed", False))
    rc = res["rc"] if has_rc else (2 if result.status == "failed" else 0)
    stdout = str(res["stdout"]) if "stdout" in res else result.text
    rc = None if any(ended.values()) else rc
    return CommandResult(rc, stdout, stderr, outcome.duration, data=data, **ended)


def playbook_result(host: Host, job: Job, outcome: Outcome) -> CommandResult:
    """What a shipped playbook did on ``host``: its tasks counted as ansible's recap counts them."""
    raise_for_host(host, job, outcome)
    tasks: list[dict[str, Any]] = []
    failed: list[str] = []
    counts = {"ok": 0, "changed": 0, "failures": 0, "skipped": 0}
    for r in job.results:
        msg = str(r.res.get("msg", ""))
        tasks.append(
            {"task": r.task, "status": r.status, "msg": msg} | ({"ignored": True} if r.ignored else {})
        )
        failed += [f"{r.task}: {msg}"] if r.status == "failed" and not r.ignored else []
        for key, counted in (
            ("ok", r.status in ("ok", "changed") or r.ignored),  # as ansible's recap counts
            ("changed", r.status == "changed"),
            ("failures", r.status == "failed" and not r.ignored),
            ("skipped", r.status == "skipped"),
        ):
            counts[key] += counted
    if job.stats:  # ansible's own recap, when it got that far (its ok counts changed and ignored too)
        counts = {key: int(as_dict(job.stats.get(key)).get(host.name, 0)) for key in counts}
    stdout = job.text()
    rc: int | None = 2 if counts["failures"] else 0
    if outcome.status in ("timeout", "canceled"):
        rc = None
    elif not job.results and outcome.rc:  # ansible-playbook stopped before any task (syntax …)
        rc, failed = outcome.rc, [stdout]
    return CommandResult(
        rc,
        stdout,
        "\n".join(failed),
        outcome.duration,
        timed_out=outcome.status == "timeout",
        cancelled=outcome.status == "canceled",
        data={**counts, "tasks": tasks},
    )


def raise_for_host(host: Host, job: Job, outcome: Outcome) -> None:
    """A host Ansible could not reach, or an ansible-playbook that did not start, is not a step result."""
    if job.unreachable is not None:
        raise ExecutorError(
            host.name, f"unreachable through Ansible: {describe_unreachable(job.unreachable)}"
        )
    if not job.results and outcome.status == "failed" and outcome.rc == 127:
        raise ExecutorError(host.name, f"ansible-playbook could not be started: {' '.join(job.lines)[-500:]}")


def describe_unreachable(message: str) -> str:
    """ssh's reason for an unreachable host (kept whole), led by what it means."""
    # ansible's wrapping ("Task failed: Data could not be sent to remote host …: ") adds nothing
    text = re.sub(r"^(?:Task failed: )?(?:.*?(?:via|over) ssh: )?", "", message, count=1, flags=re.S)
    text = " ".join(line.strip() for line in text.splitlines() if line.strip() and "@@@" not in line)
    lower = text.lower()
    cause = next((meaning for words, meaning in _CAUSES if any(w in lower for w in words)), "")
    return f"{cause}; ssh said: {text[:800]}" if cause else text[:800]


def seconds_of(delta: Any) -> float:
    """The command module's ``delta`` (``0:00:02.004``) in seconds; 0 when absent."""
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", str(delta or ""))
    return int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3]) if match else 0.0
