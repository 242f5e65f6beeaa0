"""``cairn run --step``: step through a run in a plain terminal, with the TUI's keys.

For an engineer on an SSH session without the TUI. The runner runs on the main
thread as for any ``cairn run``, paced by the engine's
:class:`~engine.core.stepping.StepPacer` and approved through its
:class:`~engine.core.approval.AskingApprover`. One thread, the
:class:`StepConsole`'s, owns the keyboard (the terminal in cbreak mode: one key
at a time, not echoed, Ctrl-C still a signal) and is the only one that reads it:

* while hosts wait before a step it says so, once per change —
  ``── waiting before detect · count · Count the zombies (3 hosts) — n next · …`` —
  and acts on ``n`` (the step, on every host), ``p`` (the rest of the phase),
  ``c`` (continue: stop stepping; remediation still asks), ``s`` (skip it,
  journaled ``skipped by tty:alice``), ``r`` (run the phase's previous step again)
  and ``x`` (cancel: running commands are killed, the run ends interrupted);
* when a step asks for approval, the approver hands the question to this same
  thread, which shows the step, the host and the exact command and reads
  ``y`` / ``e`` (every host) / ``n`` / ``s`` (a manual step: skip) / ``x``.

The progress printers print what runs, as without ``--step``. Ctrl-C is what it
is without ``--step``: it lands on the main thread and interrupts the run; this
thread sees the run's cancel and lets every host still waiting for a key go.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import sys
import threading
import time
from collections.abc import Iterator
from typing import Protocol, TextIO

from engine.cli.terminal import print_request
from engine.core.approval import Answer, ApprovalChoice, ApprovalRequest, AskingApprover
from engine.core.model import Runbook
from engine.core.stepping import StepKey, StepPacer

KEYS = "n next · p phase · c continue · s skip · r re-run · x cancel"
"""The stepping keys, as the waiting line lists them (the run screen's keys)."""
POLL = 0.05
"""Seconds the console waits for a key before it looks at the run again (a question, the run's end)."""
SETTLE = 0.15
"""Seconds the hosts waiting must stay the same before the waiting line is printed: hosts reaching a step
one after another make one line, not one per host."""
CANCELLED = "the run was cancelled"
"""The note of a step whose question the cancel left unanswered (``… by tty:alice``)."""


class Keys(Protocol):
    """Where the console's keys come from (the terminal, or a test)."""

    def read(self, timeout: float) -> str | None:
        """The keys typed, ``""`` if none came within ``timeout`` seconds, ``None`` once no more can come."""
        ...


class TerminalKeys:
    """Keys from a terminal in cbreak mode (see :func:`cbreak`)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, timeout: float) -> str | None:
        """What was typed within ``timeout`` seconds; ``None`` when the terminal is gone."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return ""
        try:
            data = os.read(self.fd, 64)
        except OSError:
            return None
        return data.decode("utf-8", "replace") if data else None


@contextlib.contextmanager
def cbreak(fd: int) -> Iterator[None]:
    """The terminal reads one key at a time without echoing it; restored on every way out.

    Signals stay on (``ISIG``): Ctrl-C interrupts the run as without ``--step``, Ctrl-Z suspends it."""
    import termios  # noqa: PLC0415 - POSIX only, and only for --step

    saved = termios.tcgetattr(fd)
    mode = termios.tcgetattr(fd)
    mode[3] &= ~(termios.ECHO | termios.ICANON)
    mode[6][termios.VMIN] = 1
    mode[6][termios.VTIME] = 0
    # TCSAFLUSH: keys typed before the run started (while it loaded) release nothing.
    termios.tcsetattr(fd, termios.TCSAFLUSH, mode)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def hosts_text(count: int) -> str:
    """``1 host``, ``3 hosts``."""
    return f"{count} host" if count == 1 else f"{count} hosts"


class StepConsole:
    """The keyboard's one reader during ``cairn run --step``: stepping keys, approvals and cancel.

    Give the runner :attr:`pacer`, :attr:`approver` and :attr:`cancel`
    (:func:`engine.core.launch.prepare_run`), then run it inside :meth:`running`.
    """

    def __init__(
        self,
        runbook: Runbook,
        *,
        hosts: int,
        by: str,
        keys: Keys,
        out: TextIO,
        cancel: threading.Event | None = None,
    ) -> None:
        self.runbook = runbook
        self.hosts = hosts
        """How many hosts the run has (``e`` approves a step on every one of them when there are several)."""
        self.by = by
        self.keys: Keys | None = keys
        self.out = out
        self.cancel = cancel or threading.Event()
        """The runner's cancel: ``x`` sets it; Ctrl-C sets it too (the runner does)."""
        self.pacer = StepPacer(runbook, by=by)
        self.approver = AskingApprover(by, self._ask)
        self._questions: queue.SimpleQueue[tuple[ApprovalRequest, Answer]] = queue.SimpleQueue()
        self._question: tuple[ApprovalRequest, Answer] | None = None
        self._done = threading.Event()
        self._let_go = False
        self._let_go_lock = threading.Lock()
        self._shown: tuple[StepKey, int] | None = None
        self._seen: tuple[StepKey, int] | None = None
        self._seen_at = 0.0
        self._thread: threading.Thread | None = None

    @classmethod
    def on_terminal(cls, runbook: Runbook, *, hosts: int, by: str) -> StepConsole:
        """A console reading this process's terminal (stdin) and writing to stdout."""
        return cls(runbook, hosts=hosts, by=by, keys=TerminalKeys(sys.stdin.fileno()), out=sys.stdout)

    # ------------------------------------------------------------ the main thread

    @contextlib.contextmanager
    def running(self, fd: int | None = None) -> Iterator[None]:
        """Read the keys while the block runs the run; ``fd``: the terminal to put in cbreak mode."""
        with cbreak(fd) if fd is not None else contextlib.nullcontext():
            self.start()
            try:
                yield
            finally:
                self.stop()

    def start(self) -> None:
        """Start reading keys (a thread of its own)."""
        self._say(f"stepping: each step waits for a key — {KEYS}; Ctrl-C cancels too")
        self._thread = threading.Thread(target=self._loop, name="cairn-step-console", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The run is over (or being left): stop reading keys, and let nothing wait for them."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._release_everything()

    # ------------------------------------------------------------ the run's threads

    def _ask(self, request: ApprovalRequest, answer: Answer) -> None:
        """The approver's question (the thread deciding): the console asks it at its next look."""
        self._questions.put((request, answer))

    # ------------------------------------------------------------ the console's thread

    def _loop(self) -> None:
        try:
            while not self._done.is_set():
                if self.cancel.is_set():
                    self._release_everything()
                    self._question = None
                elif self._question is None:
                    self._next_question()
                if self._question is None and not self._let_go:
                    self._show_waiting()
                typed = self.keys.read(POLL) if self.keys is not None else _idle(POLL)
                if typed is None:  # the terminal is gone: nobody can step on
                    self.keys = None
                    self._cancel("the terminal closed")
                    continue
                if typed.startswith("\x1b"):  # an arrow, a function key: not ours
                    continue
                for key in typed:
                    self._on_key(key.lower())
        except BaseException:
            self._cancel("the stepping console failed")  # never leave a host waiting for a key nobody reads
            raise

    def _next_question(self) -> None:
        try:
            self._question = self._questions.get_nowait()
        except queue.Empty:
            return
        request = self._question[0]
        print_request(request, self.out)
        # A whole line, never a prompt waiting at the end of one: another host's output may come meanwhile.
        self._say(self._answers(request))

    def _answers(self, request: ApprovalRequest) -> str:
        if request.manual:
            return "  └ done? y yes, done · s skip · n no, decline · x cancel the run"
        every = " · e yes on every host" if self.hosts > 1 else ""
        return f"  └ run it? y yes{every} · n no, decline · x cancel the run"

    def _show_waiting(self) -> None:
        """Say which step the hosts wait before, once the waiting hosts settled, and only when it changed."""
        key = self.pacer.next_step()
        if key is None or self.pacer.free_running:
            self._shown = self._seen = None
            return
        waiting = (key, len(self.pacer.waiting_at(key)))
        now = time.monotonic()
        if waiting == self._shown:
            return
        if waiting != self._seen:
            self._seen, self._seen_at = waiting, now
            return
        if now - self._seen_at < SETTLE:
            return
        self._shown = waiting
        phase, step_id = key
        title = next((s.title for s in self.runbook.steps(phase) if s.id == step_id), "")
        self._say(
            f"── waiting before {phase.value} · {step_id} · {title} ({hosts_text(waiting[1])}) — {KEYS}"
        )

    def _on_key(self, key: str) -> None:
        if self.cancel.is_set():
            return
        if key == "x":
            self._cancel(
                CANCELLED, said="x → cancelling: running commands are killed; the run ends interrupted"
            )
        elif self._question is not None:
            self._on_answer(key)
        elif key in "npsrc" and self.pacer.free_running:
            self._say(f"{key}: not stepping any more (c): every step runs as it can; x cancels")
        elif key == "c":
            self.pacer.release_all()
            self._say("c → continue: every later step runs as it can; remediation still asks")
        elif key in "nps":
            self._release(key)
        elif key == "r":
            self._rerun()

    def _release(self, key: str) -> None:
        released = {"n": self.pacer.release_next, "p": self.pacer.release_phase, "s": self.pacer.skip_next}[
            key
        ]()
        if released is None:
            self._say(f"{key}: no step is waiting yet")
            return
        self._forget_waiting()
        phase, step_id = released
        if key == "n":
            self._say(f"n → {phase.value} · {step_id}")
        elif key == "p":
            self._say(f"p → the rest of {phase.value}, from {step_id}, without stopping")
        else:
            self._say(f"s → {phase.value} · {step_id} skipped (skipped by {self.by})")

    def _rerun(self) -> None:
        following = self.pacer.next_step()
        again = self.pacer.rerun_previous()
        if following is None:
            self._say("r: no step is waiting yet")
            return
        if not again:
            self._say(f"r: nothing to re-run: {following[1]} is the first step of {following[0].value}")
            return
        self._forget_waiting()
        previous = again[0].previous
        earlier = previous.step_id if previous is not None else "?"
        self._say(
            f"r → {following[0].value} · {earlier} again on {hosts_text(len(again))}, "
            f"then {following[1]} waits again"
        )

    def _forget_waiting(self) -> None:
        """A key acted: the next wait gets its line, even before the same step (after a re-run), once the
        hosts have had the time to move."""
        self._shown = self._seen = None

    def _on_answer(self, key: str) -> None:
        assert self._question is not None
        request, answer = self._question
        choices = {"y": ApprovalChoice.APPROVE, "n": ApprovalChoice.DECLINE}
        if request.manual:
            choices |= {"d": ApprovalChoice.APPROVE, "s": ApprovalChoice.SKIP}
        elif self.hosts > 1:
            choices["e"] = ApprovalChoice.APPROVE_EVERY_HOST
        choice = choices.get(key)
        if choice is None:
            return  # not an answer: the prompt stays
        self._question = None
        self._forget_waiting()
        said = {
            ApprovalChoice.APPROVE: "done" if request.manual else "approved",
            ApprovalChoice.APPROVE_EVERY_HOST: "approved on every host",
            ApprovalChoice.DECLINE: "declined",
            ApprovalChoice.SKIP: "skipped",
        }[choice]
        self._say(f"{key} → {said}")
        answer(choice)

    def _cancel(self, note: str, *, said: str = "") -> None:
        """Cancel the run as the TUI's ``x`` does: the runner's cancel, then every waiting question let go."""
        if said:
            self._say(said)
        self.cancel.set()
        self._release_everything(f"{note} by {self.by}")

    def _release_everything(self, note: str = "") -> None:
        """Nothing may wait for a key any more: hosts before a step go (and see the cancel), questions close."""
        with self._let_go_lock:
            if self._let_go:
                return
            self._let_go = True
        self.pacer.cancel()
        self.approver.close(note or f"not run: the run was interrupted before {self.by} answered")

    def _say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


def _idle(seconds: float) -> str:
    """No keyboard any more: just wait (the run is being cancelled)."""
    time.sleep(seconds)
    return ""
