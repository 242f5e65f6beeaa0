"""A step's command run as another user through ``sudo``: what the local and SSH executors send.

A ``run`` step with ``become`` (:class:`~engine.core.become.Become`) runs as::

    sudo -n -u USER FLAGS -- bash -c WRAPPER cairn COMMAND                no password
    sudo -S -p PROMPT -u USER FLAGS -- bash -c WRAPPER cairn COMMAND      a password

How each thing travels:

* **The command** is on a command line, as it is without ``become``: it holds no secret (a
  step refers to its secrets as ``"$CAIRN_SECRET_<NAME>"``).
* **The step's variables** (its secrets, and its mark ``CAIRN_STEP`` that the kill looks for):
  sudo resets the environment, so they travel on stdin, after a mark line that only this step
  knows. WRAPPER (bash, already USER) drops every line before the mark, reads the variables,
  and ``exec``s ``bash -c COMMAND`` with them exported: every process of the command carries
  the mark. Then stdin is at its end, as a command's stdin always is here.
* **The password** is stdin's first line, read by ``sudo -S``; never on a command line, never
  in an environment. When sudo does not ask (NOPASSWD, a cached timestamp) the line is still
  there when WRAPPER starts, and WRAPPER drops it with everything before the mark: it is never
  evaluated, echoed, nor seen by the command. Nothing follows the password until WRAPPER has
  said that it runs; if sudo asks a second time (PROMPT seen twice: a wrong password) stdin is
  closed, so no variable is ever taken by sudo for a password attempt.
* **Proof.** WRAPPER's first line, on stderr, says that it runs and names its process group
  (``use_pty`` gives the command a session of its own). Until that line, stderr is sudo's: a
  command that ends without it never ran, and :meth:`Escalation.failure` says why in one line
  (not installed, asks for a password, the password refused, refused).
* **The kill** of a timed-out or cancelled step is the usual kill script
  (:func:`~engine.core.executors.process_trees.kill_script`) run through the same sudo
  (:meth:`Escalation.kill_argv`): only USER may read and signal USER's processes.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from engine.core.become import METHODS, Become
from engine.core.doctor import package_hint
from engine.core.errors import ExecutorError
from engine.core.executors.step_env import STEP_ENV, env_payload

HEAD_LIMIT = 64 * 1024
"""Bytes of sudo's words kept while waiting for the wrapper's first line."""
_SAID_LIMIT = 200
_REFUSED_FLAGS = frozenset(
    {"-A", "--askpass", "-b", "--background", "-e", "--edit", "-l", "--list", "-v", "--validate"}
    | {"-K", "--remove-timestamp", "-V", "--version", "-h", "--help", "-u", "--user", "-p", "--prompt"}
    | {"-s", "--shell", "-i", "--login"}
)
"""ansible_become_flags that would change what runs or how the password is read."""
_REFUSED_LETTERS = frozenset("AbelvKVhupsi")
"""The same as short options, also inside a cluster (``-Hi``)."""


class StreamSink(Protocol):
    """Where a stream's bytes go (:class:`~engine.core.executors.streams.OutputStream`, or a filter)."""

    def feed(self, data: bytes, final: bool = False) -> None: ...


class EscalationFailed(ExecutorError):
    """sudo did not run the command on a host: it is not installed, asks for a password, or refused."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(host, reason)
        self.reason = reason
        self.args = (reason,)  # the reason names the host already: shown as it is


@dataclass(frozen=True, slots=True)
class Escalation:
    """How one step's command escalates on one host (built by :func:`escalation_for`)."""

    host: str
    become: Become
    login: str
    """Who escalates (the SSH user, or this process's user): named in messages."""
    token: str
    """The step's mark (``CAIRN_STEP``); the markers of the exchange are made from it."""
    env: Mapping[str, str] = field(repr=False)
    flags: tuple[str, ...] = ()

    @property
    def ready_mark(self) -> str:
        return f"CAIRN-ESCALATED-{self.token}"

    @property
    def input_mark(self) -> str:
        return f"CAIRN-INPUT-{self.token}"

    @property
    def prompt(self) -> str:
        return f"[cairn-sudo-{self.token}]"

    @property
    def no_sudo_mark(self) -> str:
        return f"CAIRN-NO-SUDO-{self.token}"

    @property
    def handshake(self) -> bool:
        """True when the variables wait for the wrapper's first line (a password goes first)."""
        return self.become.password is not None

    def _sudo(self, prompt: str) -> list[str]:
        asks = ["-S", "-p", prompt] if self.become.password is not None else ["-n"]
        return ["sudo", *asks, "-u", self.become.user, *self.flags, "--"]

    def wrapper(self) -> str:
        """Bash, run by sudo as the target user: report, drop what precedes the mark, read the
        variables, then become the command (``$1``)."""
        mark = self.input_mark
        return (
            '{ read -r s < /proc/$$/stat; } 2>/dev/null; s=${s##*) }; read -r _ _ g _ <<< "$s"; '
            f"printf '%s %s\\n' {self.ready_mark} \"$g\" >&2; "
            f'while IFS= read -r l; do [ "$l" = {mark} ] && break; done; '
            f'[ "$l" = {mark} ] || {{ echo "cairn: the escalated command got no variables" >&2; exit 125; }}; '
            'IFS= read -r -d "" e || true; eval "$e"; unset e l s g; exec bash -c "$1"'
        )

    def argv(self, command: str) -> list[str]:
        """The local process: sudo running the wrapper, which runs ``command``."""
        return [*self._sudo(self.prompt), "bash", "-c", self.wrapper(), "cairn", command]

    def shell_command(self, command: str) -> str:
        """The same as POSIX shell for a login shell (SSH): says so when there is no sudo at all."""
        missing = f"{{ echo {self.no_sudo_mark} >&2; exit 127; }}"
        return f"command -v sudo >/dev/null 2>&1 || {missing}; exec {shlex.join(self.argv(command))}"

    def opening(self) -> bytes:
        """What stdin gets at once: the password line, or (no password) the mark and the variables."""
        if self.become.password is not None:
            return f"{self.become.password}\n".encode()
        return self.variables()

    def variables(self) -> bytes:
        """The mark line, then the variables as ``export`` lines (after which stdin ends)."""
        payload = env_payload({**self.env, STEP_ENV: self.token})
        return f"{self.input_mark}\n".encode() + payload

    def stderr(
        self, sink: StreamSink, *, send: Callable[[bytes], None], close: Callable[[], None]
    ) -> EscalatedStderr:
        """A filter for the command's stderr: sudo's prompts out, the wrapper's line taken; on that
        line it sends the variables (when they waited) and ends stdin; on a second prompt it ends stdin."""
        return EscalatedStderr(self, sink, send=send, close=close)

    # ------------------------------------------------------------------ what went wrong

    def failure(self, rc: int | None, said: EscalatedStderr) -> str:
        """Why sudo never ran the command, in one line naming the host and the fix."""
        raw = said.head.decode(errors="replace")
        words = self._words(raw)
        host, user = self.host, self.become.user
        if self.no_sudo_mark in raw:
            return self.not_installed()
        if said.asked > 1:
            return (
                f"sudo on {host} did not accept ansible_become_password for {self.login}: "
                "check the password (sudo asks for the password of the user who escalates)"
            )
        if self.become.password is None and "password is required" in words:
            return (
                f"sudo on {host} asks for a password: set ansible_become_password, "
                f"or allow NOPASSWD for {self.login}"
            )
        detail = words or f"exit code {rc}"
        return f"sudo on {host} refused: {self.login} may not run commands as {user} ({detail})"

    def not_installed(self) -> str:
        """``sudo is not installed on web-3 (Debian package sudo)``."""
        hint = package_hint("sudo")
        return f"sudo is not installed on {self.host}" + (f" ({hint})" if hint else "")

    def _words(self, raw: str) -> str:
        """What sudo said, on one line: the wrapper (long, ours) shown as …, cut to a sensible length."""
        text = raw.replace(self.prompt, "").replace(self.no_sudo_mark, "").replace(self.wrapper(), "…")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        said = "; ".join(lines)
        return said if len(said) <= _SAID_LIMIT else said[: _SAID_LIMIT - 1] + "…"

    # ------------------------------------------------------------------ the kill

    def kill_argv(self, script: str) -> list[str]:
        """The kill script run as the target user: stdin is dropped before it runs (the password
        line may still be there when sudo did not ask for it)."""
        return [*self._sudo(""), "sh", "-c", f"exec </dev/null; {script}"]

    def kill_shell(self, script: str) -> str:
        """:meth:`kill_argv` as a shell command line (SSH)."""
        return shlex.join(self.kill_argv(script))

    def kill_input(self) -> bytes:
        """The kill's whole stdin: the password line, or nothing."""
        return f"{self.become.password}\n".encode() if self.become.password is not None else b""

    def kill_note(self, rc: int | None, said: str) -> str:
        """What the step's stderr says after an escalated kill: the kill script's own lines, or
        (sudo refused this time) that the processes may still run."""
        if rc in (0, None):
            return said
        return (
            f"cairn: could not end the step's processes as {self.become.user} "
            f"(sudo: {self._words(said) or f'exit code {rc}'}); they may still be running: end them by hand\n"
        )

    def guard_lines(self, pgid: int, group: int | None) -> str:
        """What the host's guard is told about this command besides ``watch``: how to escalate its
        kill (and the password, on a line of its own: it reaches no command line there either)."""
        how = shlex.join(self._sudo(""))
        lines = f"escalated {pgid} {group if group is not None else '-'} {how}\n"
        if self.become.password is not None:
            lines += f"password {pgid}\n{self.become.password}\n"
        return lines


def escalation_for(
    host: str, become: Become, *, login: str, token: str, env: Mapping[str, str]
) -> Escalation:
    """The escalation of one command; :class:`ExecutorError` for what the native executors cannot do."""
    if become.method not in METHODS:
        raise ExecutorError(
            host,
            f"ansible_become_method {become.method} is not supported by Cairn's native executors; "
            "use sudo, or rerun with --via ansible",
        )
    password = become.password
    if password is not None and any(c in password for c in "\n\r\0"):
        raise ExecutorError(host, "ansible_become_password holds a line break or NUL, which sudo cannot read")
    if not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.@-]*", become.user):
        raise ExecutorError(host, f"ansible_become_user {become.user!r} is not a user name")
    flags = _sudo_flags(host, become.flags)
    return Escalation(host, become, login, token, dict(env), flags)


def _sudo_flags(host: str, text: str) -> tuple[str, ...]:
    """``ansible_become_flags`` as sudo options. How the password is read is Cairn's to say: ``-S``
    (with a password) or ``-n`` (without), so both are dropped from the flags (Ansible's default
    flags hold both); options that would change what runs are refused."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ExecutorError(host, f"ansible_become_flags cannot be read as shell words: {exc}") from None
    kept: list[str] = []
    for word in words:
        name = word.split("=", 1)[0]
        cluster = re.fullmatch(r"-([A-Za-z]+)", word)
        letters = set(cluster.group(1)) if cluster else set()
        if name in _REFUSED_FLAGS or letters & _REFUSED_LETTERS:
            raise ExecutorError(
                host,
                f"ansible_become_flags {word} cannot be used by Cairn's native executors (it changes what "
                "runs or how the password is read); remove it, or rerun with --via ansible",
            )
        if name in ("-S", "--stdin", "-n", "--non-interactive"):
            continue
        rest = "-" + "".join(c for c in cluster.group(1) if c not in "Sn") if cluster else word
        if rest != "-":
            kept.append(rest)
    return tuple(kept)


class EscalatedStderr:
    """An escalated command's stderr: sudo's prompts taken out, the wrapper's first line read.

    Before that line everything is sudo's (held, for :meth:`Escalation.failure`); after it the
    bytes go to ``sink`` unchanged. Prompts are counted: a second one means sudo refused the
    password and asks again, and stdin is closed so that it reads nothing more.
    """

    def __init__(
        self,
        escalation: Escalation,
        sink: StreamSink,
        *,
        send: Callable[[bytes], None],
        close: Callable[[], None],
    ) -> None:
        self.escalation = escalation
        self.sink = sink
        self._send = send
        self._close = close
        self._prompt = escalation.prompt.encode()
        self._ready = escalation.ready_mark.encode()
        self.ready = False
        """True once the wrapper said it runs (sudo let it)."""
        self.pgid: int | None = None
        """The escalated command's process group, from the wrapper's line."""
        self.asked = 0
        """How many times sudo asked for the password."""
        self.head = b""
        """What sudo said before the wrapper's line (all it said, when the wrapper never ran)."""

    def feed(self, data: bytes, final: bool = False) -> None:
        if self.ready:
            self.sink.feed(data, final)
            return
        self.head += data
        self._count_prompts()
        self._find_ready()
        if len(self.head) > HEAD_LIMIT:
            self.head = self.head[-HEAD_LIMIT:]
        if final:
            self.sink.feed(b"", final=True)

    def _count_prompts(self) -> None:
        while self._prompt in self.head:
            self.head = self.head.replace(self._prompt, b"", 1)
            self.asked += 1
            if self.asked == 2:  # the password was wrong: sudo must read nothing more
                self._close()

    def _find_ready(self) -> None:
        if self.head.startswith(self._ready):
            at = 0
        else:
            found = self.head.find(b"\n" + self._ready)
            if found < 0:
                return
            at = found + 1
        end = self.head.find(b"\n", at)
        if end < 0:
            return  # the line is not complete yet
        words = self.head[at:end].split()
        self.pgid = int(words[1]) if len(words) > 1 and words[1].isdigit() else None
        before, after = self.head[:at], self.head[end + 1 :]
        self.ready = True
        self.head = before
        if self.escalation.handshake:  # sudo is done with stdin: now the variables, then its end
            self._send(self.escalation.variables())
            self._close()
        if before:  # sudo's warnings (an unresolvable host name …): the step's stderr shows them
            self.sink.feed(before)
        if after:
            self.sink.feed(after)
