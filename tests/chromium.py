"""A real headless chromium for tests, driven over the DevTools protocol on a pipe (no port, no websocket).

``Chromium(profile)`` launches it once; :meth:`Chromium.dom` loads a page and returns the DOM the
browser built, :meth:`Chromium.evaluate` asks it anything. The docs site tests and the incident
report tests open their pages in it.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"


class Chromium:
    """One real headless chromium, driven over the DevTools protocol on a pipe (fds 3 and 4): one launch
    for every page, which keeps the test fast; each page is loaded in the same tab, as a reader
    clicking through would."""

    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    )

    def __init__(self, profile: Path) -> None:
        if not Path(CHROMIUM).exists():
            pytest.fail(
                f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)", pytrace=False
            )
        commands_in, self._commands = os.pipe()
        self._answers, answers_out = os.pipe()

        def onto_fds_3_and_4() -> None:  # in the child: the pipe ends chromium expects
            read, write = os.dup(commands_in), os.dup(answers_out)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *self.FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4),
            preexec_fn=onto_fds_3_and_4,  # noqa: PLW1509 - no threads are started by this test
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_in)
        os.close(answers_out)
        self._buffer = b""
        self._last_id = 0
        self._events: list[dict[str, Any]] = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable", session=self.session)

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._answers, 1 << 16)
            if not chunk:
                raise EOFError(f"chromium closed its pipe (exit {self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def send(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> dict[str, Any]:
        self._last_id += 1
        command: dict[str, Any] = {"id": self._last_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self._commands, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            message = self._message(deadline)
            if message.get("id") == self._last_id:
                assert "error" not in message, f"{method}: {message['error']}"
                result: dict[str, Any] = message["result"]
                return result
            self._events.append(message)

    def evaluate(self, expression: str) -> Any:
        done = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, self.session)
        return done["result"]["value"]

    def dom(self, url: str) -> str:
        """Load ``url`` and return the DOM chromium built from it."""
        self._events.clear()
        self.send("Page.navigate", {"url": url}, self.session)
        deadline = time.monotonic() + 30
        while True:  # the load event of this page (not a late one of the page before)
            if any(e.get("method") == "Page.loadEventFired" for e in self._events):
                self._events.clear()
                if self.evaluate("location.href") == url:
                    return str(self.evaluate("document.documentElement.outerHTML"))
            self._events.append(self._message(deadline))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        finally:
            os.close(self._commands)
            os.close(self._answers)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
