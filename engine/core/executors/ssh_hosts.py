"""Where an SSH host is (:class:`Endpoint`), whether it speaks SSH, and whether to trust its key.

An endpoint behind bastions carries them (:attr:`Endpoint.jumps`, each an endpoint itself, first
hop first; :mod:`engine.core.executors.ssh_jumps` resolves them). ``ssh-keyscan`` cannot go
through a bastion, so the line that would trust such a host runs it on the last bastion.

:func:`first_bytes` looks at what a host sends first, before paramiko does: a host that sends
nothing, closes at once or answers something else fails with one line saying so.
:func:`fast_transport` prefers AES-GCM. Known hosts are checked the OpenSSH way: an unknown key is refused with its fingerprint and
the ``ssh-keyscan`` line that would trust it (:class:`RefuseUnknown`), or recorded under an
flock with the ``accept-new`` opt-in (:class:`AcceptNew`); a changed key is always refused
(:func:`changed_key_message`, with the ``ssh-keygen -R`` fix).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from engine.core.errors import ExecutorError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how one host is reached, after inventory and ssh_config are combined."""

    host: str
    """The inventory name."""
    address: str
    port: int
    user: str
    key_files: tuple[str, ...]
    key_from_inventory: bool
    password: str | None
    proxy_command: str | None
    connect_timeout: float
    known_hosts: Path
    accept_new: bool
    jumps: tuple[Endpoint, ...] = ()
    """The bastions it is reached through (ProxyJump), first hop first; each with the hops before it."""

    @property
    def known_hosts_name(self) -> str:
        """The name known_hosts files use: ``address``, or ``[address]:port`` off port 22."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"


class HostKeyRefused(Exception):
    """An unknown host key under the strict policy (raised out of paramiko's connect)."""


def _fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


class RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """Strict checking: an unknown host is refused, with its fingerprint and how to trust it."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        ep = self.ep
        scan = keyscan_command(ep)
        raise HostKeyRefused(
            f"host key of {hostname} is not in {ep.known_hosts} (it offers {_fingerprint(key)}). "
            f"Check that fingerprint with the host's owner, then trust it: `{scan} >> {ep.known_hosts}`, "
            "or rerun with --accept-new-host-keys to record keys of hosts not seen before"
        )


def keyscan_command(ep: Endpoint) -> str:
    """The command that prints ``ep``'s host key: ``ssh-keyscan``, run on the last bastion if it has one."""
    scan = f"ssh-keyscan -p {ep.port} {ep.address}" if ep.port != 22 else f"ssh-keyscan {ep.address}"
    if not ep.jumps:
        return scan
    *before, last = ep.jumps
    through = f"-J {','.join(f'{h.user}@{h.host}:{h.port}' for h in before)} " if before else ""
    return f"ssh {through}-p {last.port} {last.user}@{last.host} {scan}"


class AcceptNew(paramiko.MissingHostKeyPolicy):
    """OpenSSH's ``accept-new``: record a key for a host never seen; a changed key still fails."""

    _file_lock = threading.Lock()

    def __init__(self, ep: Endpoint, parsed: paramiko.HostKeys | None = None) -> None:
        self.ep = ep
        self.parsed = parsed

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        path = self.ep.known_hosts
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with self._file_lock:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="ascii") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # other Cairn processes may append too
                handle.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)
        if self.parsed is not None:
            self.parsed.add(hostname, key.get_name(), key)
        log.warning("recorded new host key for %s in %s: %s", hostname, path, _fingerprint(key))


def changed_key_message(ep: Endpoint, got: paramiko.PKey, expected: paramiko.PKey | None) -> str:
    was = _fingerprint(expected) if expected is not None else "another key"
    name = ep.known_hosts_name
    return (
        f"HOST KEY CHANGED for {name}: known_hosts ({ep.known_hosts}) has {was}, the host offers "
        f"{_fingerprint(got)}. Someone may be intercepting the connection, or the host was "
        "reinstalled. Cairn will not connect. If the change is expected, remove the old key with "
        f"`ssh-keygen -R '{name}' -f {ep.known_hosts}` and trust the new one"
    )


def first_bytes(ep: Endpoint, sock: socket.socket) -> bytes:
    """What the host sends first, peeked at (paramiko reads it again), once it sends anything.

    An SSH server sends its banner as soon as it accepts. A host that sends nothing within the
    connect timeout, or closes first, fails here in one line: handed to paramiko, it failed with
    "No existing session" or "Error reading SSH protocol banner" and a traceback from its thread.
    """
    where = f"{ep.address}:{ep.port}"
    try:
        first = sock.recv(256, socket.MSG_PEEK)
    except TimeoutError:
        sock.close()
        raise ExecutorError(
            ep.host,
            f"no SSH banner from {where} within {ep.connect_timeout:g}s: something accepts "
            "connections there but does not answer as an SSH server",
        ) from None
    except OSError:  # reset by the peer
        first = b""
    if not first:
        sock.close()
        raise ExecutorError(
            ep.host,
            f"{where} closed the connection before the SSH banner: sshd refused it (MaxStartups, "
            "tcpwrappers, a firewall) or it is not sshd",
        )
    return first


def first_line(data: bytes) -> str:
    """The first line of what a host sent, printable and short (for a message)."""
    line = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    shown = "".join(c if c.isprintable() else "?" for c in line)
    return shown[:60] + ("…" if len(shown) > 60 else "")


AEAD_FIRST = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
"""Preferred ciphers: with AES-GCM no HMAC is computed and compared byte by byte in Python, which
with the default aes-ctr + hmac-sha2 was the largest client CPU cost of a fan-out here (profiled)."""


def fast_transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = tuple(c for c in AEAD_FIRST if c in offered) + tuple(
        c for c in offered if c not in AEAD_FIRST
    )
    return transport


def abandon(client: paramiko.SSHClient, sock: Any) -> None:
    client.close()
    with contextlib.suppress(OSError):
        sock.close()
