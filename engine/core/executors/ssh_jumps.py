"""Where an SSH host is and what it is reached through: its :class:`Endpoint`, bastions included.

:func:`resolve_endpoint` combines a host's inventory variables with its ssh_config block the way
``ansible`` (and the ``ssh`` it runs) does. A jump comes, as in OpenSSH, from the command line
before ssh_config: the inventory's ``ansible_ssh_common_args`` then ``ansible_ssh_extra_args``
(``-o ProxyJump=SPEC``, ``-o 'ProxyJump SPEC'``, ``-J SPEC``, ``-JSPEC``, or ``-o ProxyCommand=…``),
else the target's ssh_config ``ProxyJump``/``ProxyCommand``, whichever it names first. ``none``
means no jump. Every other option in those strings is ignored, and :func:`inventory_ssh_args`
says which (``cairn inventory`` shows them).

SPEC is OpenSSH's: comma-separated hops ``[user@]host[:port]`` or ``ssh://[user@]host[:port]``,
first hop first. Each hop is resolved like a host from its own ssh_config block (HostName, Port,
User, IdentityFile, UserKnownHostsFile, StrictHostKeyChecking, ConnectTimeout); the spec's user
and port win over the block's. A hop's own ProxyJump or ProxyCommand is not followed (OpenSSH
follows the first hop's): the chain is taken as written for the target. A hop logs in with its
block's IdentityFile, else ssh-agent and the default keys, as OpenSSH's jump does: the target's
``ansible_ssh_private_key_file`` is not offered to a bastion.

:class:`JumpChains` holds the run's connections to bastions (:mod:`engine.core.executors.ssh`
opens them): one per chain, shared by every host behind it, and the hops that failed.
"""

from __future__ import annotations

import getpass
import logging
import re
import shlex
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import paramiko

from engine.core.errors import ExecutorError
from engine.core.executors import ExecutionOptions
from engine.core.executors.ssh_hosts import Endpoint
from engine.core.model import Host

log = logging.getLogger(__name__)

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
SSH_ARGS_VARIABLES = ("ansible_ssh_common_args", "ansible_ssh_extra_args")
"""The inventory's strings of ssh options, in the order Ansible puts them on ssh's command line."""
_WITH_VALUE = frozenset("BbcDEeFIiJLlmOopQRSWw")
"""ssh's options that take a value (``man ssh``), so an ignored one is shown with it."""
_OPTION = re.compile(r"\s*([A-Za-z]+)\s*(?:=\s*|\s+)(.*)", re.DOTALL)
PROXY_EXIT = 2.0
"""Seconds a ProxyCommand has to exit after SIGTERM when its connection closes, before SIGKILL."""
Lookup = Callable[[str], dict[str, Any]]
"""ssh_config's options for a host name (``paramiko.SSHConfig.lookup``, keys in lower case)."""


class ProxyKind(Enum):
    """How a host is reached through something else."""

    JUMP = "ProxyJump"
    """Through SSH bastions, hop by hop (direct-tcpip channels)."""
    COMMAND = "ProxyCommand"
    """Through a local command's stdin and stdout."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """A ProxyJump or ProxyCommand setting; ``value`` ``none`` means none."""

    kind: ProxyKind
    value: str
    source: str
    """Where it was read: an inventory variable's name, or ``ssh_config``."""


@dataclass(frozen=True, slots=True)
class InventorySshArgs:
    """What Cairn takes from a host's ``ansible_ssh_common_args``/``ansible_ssh_extra_args``."""

    proxy: Proxy | None
    """The first jump or proxy command they name (OpenSSH takes the first value given)."""
    ignored: tuple[tuple[str, str], ...]
    """(variable, option) of every other option, for ``cairn inventory`` to say."""


@dataclass(frozen=True, slots=True)
class HopSpec:
    """One hop of a ProxyJump spec, as written."""

    host: str
    user: str | None
    port: int | None


def inventory_ssh_args(name: str, variables: Mapping[str, Any]) -> InventorySshArgs:
    """Read the inventory's ssh option strings of host ``name``; :class:`ExecutorError` if one cannot be read."""
    proxy: Proxy | None = None
    ignored: list[tuple[str, str]] = []
    for variable in SSH_ARGS_VARIABLES:
        text = variables.get(variable)
        if not text:
            continue
        try:
            words = shlex.split(str(text))
        except ValueError as exc:
            raise ExecutorError(name, f"{variable} cannot be read as ssh arguments ({exc})") from None
        for found, option in _options(name, variable, words):
            if found is None:
                ignored.append((variable, option))
            elif proxy is None:
                proxy = found
    return InventorySshArgs(proxy, tuple(ignored))


def _options(name: str, variable: str, words: list[str]) -> list[tuple[Proxy | None, str]]:
    """Each option of ``words``: (the proxy it sets, or ``None`` when Cairn ignores it; as written)."""
    found: list[tuple[Proxy | None, str]] = []
    i = 0
    while i < len(words):
        word = words[i]
        flag = word[1:2] if word.startswith("-") and len(word) > 1 else ""
        if flag in _WITH_VALUE and len(word) == 2:
            if i + 1 >= len(words):
                raise ExecutorError(name, f"{variable}: {word} needs a value")
            value, shown, i = words[i + 1], f"{word} {words[i + 1]}", i + 2
        else:
            value, shown, i = word[2:], word, i + 1
        proxy = None
        if flag == "J":
            proxy = Proxy(ProxyKind.JUMP, value, variable)
        elif flag == "o" and (option := _OPTION.fullmatch(value)):
            key = option.group(1).lower()
            for kind in ProxyKind:
                if key == kind.value.lower():
                    proxy = Proxy(kind, option.group(2).strip(), variable)
        elif flag == "o" and value.strip().lower() == "proxyjump":
            proxy = Proxy(ProxyKind.JUMP, "", variable)  # no spec at all: refused as an empty hop
        found.append((proxy, shown))
    return found


def config_proxy(config: Mapping[str, Any]) -> Proxy | None:
    """ssh_config's ProxyJump or ProxyCommand, whichever it names first (as OpenSSH takes it)."""
    for key in config:  # paramiko keeps the order in which the file gave them
        if key == "proxyjump":
            return Proxy(ProxyKind.JUMP, str(config[key]), "ssh_config")
        if key == "proxycommand":  # paramiko reads "ProxyCommand none" as None
            return Proxy(ProxyKind.COMMAND, str(config[key] or "none"), "ssh_config")
    return None


def parse_jump(name: str, proxy: Proxy) -> tuple[HopSpec, ...]:
    """The hops of a ProxyJump spec, first hop first; :class:`ExecutorError` naming what is wrong."""
    spec = proxy.value

    def wrong(why: str) -> ExecutorError:
        return ExecutorError(name, f"ProxyJump {spec!r} in {proxy.source}: {why}")

    hops = []
    for written in spec.split(","):
        text = written.strip().removeprefix("ssh://")
        user, _, address = text.rpartition("@")
        port: int | None = None
        if address.startswith("["):  # [IPv6]:port
            address, _, rest = address[1:].partition("]")
            port_text = rest.removeprefix(":") if rest.startswith(":") else None
        elif address.count(":") == 1:
            address, port_text = address.split(":")
        else:
            port_text = None
        if not address:
            raise wrong("an empty hop")
        if port_text is not None:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise wrong(f"{port_text!r} is not a port number")
            port = int(port_text)
        hops.append(HopSpec(address, user or None, port))
    return tuple(hops)


def resolve_endpoint(host: Host, lookup: Lookup, options: ExecutionOptions) -> Endpoint:
    """Combine the host's inventory variables with ssh_config the way ``ansible`` does."""
    v = host.vars
    target = str(v.get("ansible_host") or v.get("ansible_ssh_host") or host.name)
    config = lookup(target)
    port = v.get("ansible_port") or v.get("ansible_ssh_port") or config.get("port") or 22
    user = v.get("ansible_user") or v.get("ansible_ssh_user") or config.get("user") or getpass.getuser()
    key = v.get("ansible_ssh_private_key_file") or v.get("ansible_private_key_file")
    try:
        port_number = int(port)
    except (TypeError, ValueError):
        raise ExecutorError(host.name, f"ansible_port {port!r} is not a port number") from None
    proxy = inventory_ssh_args(host.name, v).proxy or config_proxy(config)
    jumps: tuple[Endpoint, ...] = ()
    proxy_command = None
    if proxy is not None and proxy.value.lower() != "none":
        if proxy.kind is ProxyKind.JUMP:
            for hop in parse_jump(host.name, proxy):
                jumps += (_hop_endpoint(host.name, hop, jumps, lookup(hop.host), options),)
        else:
            proxy_command = proxy.value
    return Endpoint(
        host=host.name,
        address=str(config.get("hostname", target)) if target == host.name else target,
        port=port_number,
        user=str(user),
        key_files=(str(Path(key).expanduser()),) if key else tuple(config.get("identityfile", [])),
        key_from_inventory=bool(key),
        password=v.get("ansible_password") or v.get("ansible_ssh_pass"),
        proxy_command=proxy_command,
        connect_timeout=float(config.get("connecttimeout") or options.connect_timeout),
        known_hosts=_known_hosts(config, options),
        accept_new=_accept_new(config, options),
        jumps=jumps,
    )


def _hop_endpoint(
    name: str, hop: HopSpec, before: tuple[Endpoint, ...], config: dict[str, Any], options: ExecutionOptions
) -> Endpoint:
    """Bastion ``hop`` of host ``name``, reached through the hops ``before`` it."""
    port = hop.port or config.get("port") or 22
    try:
        port_number = int(port)
    except (TypeError, ValueError):
        raise ExecutorError(
            name, f"ssh_config Port {port!r} of bastion {hop.host} is not a port number"
        ) from None
    return Endpoint(
        host=hop.host,
        address=str(config.get("hostname", hop.host)),
        port=port_number,
        user=hop.user or str(config.get("user") or getpass.getuser()),
        key_files=tuple(config.get("identityfile", [])),
        key_from_inventory=False,
        password=None,
        proxy_command=None,
        connect_timeout=float(config.get("connecttimeout") or options.connect_timeout),
        known_hosts=_known_hosts(config, options),
        accept_new=_accept_new(config, options),
        jumps=before,
    )


def _known_hosts(config: Mapping[str, Any], options: ExecutionOptions) -> Path:
    named = str(config.get("userknownhostsfile") or "").split()
    return (options.known_hosts or (Path(named[0]) if named else DEFAULT_KNOWN_HOSTS)).expanduser()


def _accept_new(config: Mapping[str, Any], options: ExecutionOptions) -> bool:
    strict = str(config.get("stricthostkeychecking", "yes")).lower()
    return options.accept_new_host_keys or strict in ("accept-new", "no", "off")


def describe_jumps(ep: Endpoint) -> str:
    """`` via ProxyJump jump-1 (bob@10.0.0.1:22), …`` or `` via ProxyCommand '…'`` (or nothing)."""
    if ep.jumps:
        hops = (str(h) if h.host == h.address else f"{h.host} ({h})" for h in ep.jumps)
        return " via ProxyJump " + ", ".join(hops)
    return f" via ProxyCommand {ep.proxy_command!r}" if ep.proxy_command else ""


def describe_ignored(args: InventorySshArgs) -> str:
    """``; ignored (…): ansible_ssh_common_args -o X, -C`` for the options Cairn does not use (or nothing)."""
    if not args.ignored:
        return ""
    by_variable: dict[str, list[str]] = {}
    for variable, option in args.ignored:
        by_variable.setdefault(variable, []).append(option)
    said = "; ".join(f"{variable} {', '.join(options)}" for variable, options in by_variable.items())
    return f"; ignored (Cairn reads only ProxyJump, -J and ProxyCommand there): {said}"


class ProxyCommandSocket(paramiko.ProxyCommand):
    """paramiko's ProxyCommand, whose :meth:`close` also ends the command, reaps it and closes its
    pipes: paramiko's only sends SIGTERM, leaving a zombie and three pipes per connection."""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=PROXY_EXIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


# --------------------------------------------------------------------------- the run's bastions


class BastionFailed(Exception):
    """A bastion of a host's chain could not be reached or logged in to; the executor names the host."""

    def __init__(self, hop: Endpoint, cause: str) -> None:
        super().__init__(cause)
        self.hop = hop
        self.cause = cause

    def for_host(self, name: str) -> ExecutorError:
        return ExecutorError(
            name, f"cannot reach {name} through bastion {self.hop.host} ({self.hop}): {self.cause}"
        )


def cause_of(exc: ExecutorError) -> str:
    """The message of ``exc`` without the ``host:`` it starts with."""
    return str(exc).removeprefix(f"{exc.host}: ")


def chain_key(chain: tuple[Endpoint, ...]) -> tuple[str, ...]:
    """A chain of hops as ``user@address:port`` of each: the hosts behind the same chain share it."""
    return tuple(str(hop) for hop in chain)


class JumpChains:
    """The run's connections to bastions: one per chain of hops, opened once under a lock and shared
    by every host behind it; a hop that failed is remembered, its error given to every host after.

    ``open_hop`` opens one hop as the executor opens any host (host keys checked, keys, timeouts),
    through :meth:`channel_to` when it has hops before it.
    """

    def __init__(self, open_hop: Callable[[Endpoint], paramiko.SSHClient]) -> None:
        self._open_hop = open_hop
        self._lock = threading.Lock()
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._clients: dict[tuple[str, ...], paramiko.SSHClient] = {}
        self._failed: dict[tuple[str, ...], BastionFailed] = {}

    def channel_to(self, ep: Endpoint) -> paramiko.Channel:
        """A direct-tcpip channel from ``ep``'s last hop to ``ep``: the socket to connect ``ep`` over.

        Raises :class:`BastionFailed` when a hop cannot be reached, :class:`ExecutorError` (naming
        ``ep``) when the last hop cannot open the connection.
        """
        last = ep.jumps[-1]
        transport = self._transport(ep.jumps)
        try:
            channel = transport.open_channel(
                "direct-tcpip", (ep.address, ep.port), ("127.0.0.1", 0), timeout=ep.connect_timeout
            )
        except paramiko.ChannelException as exc:
            raise ExecutorError(
                ep.host,
                f"bastion {last.host} could not open a connection to {ep.address}:{ep.port} "
                f"(ChannelException {exc.code}: {exc.text})",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:  # the bastion's connection just went
            raise BastionFailed(last, f"the connection to the bastion was lost ({exc})") from None
        return channel

    def _transport(self, chain: tuple[Endpoint, ...]) -> paramiko.Transport:
        key = chain_key(chain)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one handshake per bastion, however many hosts behind it ask at once
            with self._lock:
                failed, client = self._failed.get(key), self._clients.get(key)
            if failed is not None:
                raise failed
            transport = client.get_transport() if client else None
            if transport is not None and transport.is_active():
                return transport
            if client:  # it dropped since: the hosts behind it reconnect through a new one
                client.close()
            try:
                client = self._open_hop(chain[-1])
            except (BastionFailed, ExecutorError) as exc:
                # A hop before this one failed (BastionFailed), or this one did.
                failed = exc if isinstance(exc, BastionFailed) else BastionFailed(chain[-1], cause_of(exc))
                log.info("bastion %s: %s", failed.hop.host, failed.cause)
                with self._lock:
                    self._failed[key] = failed  # for the rest of the run: no retry per host behind it
                raise failed from None
            with self._lock:
                self._clients[key] = client
            transport = client.get_transport()
            assert transport is not None
            return transport

    def close(self) -> None:
        """Close every bastion connection, the farthest hops first."""
        with self._lock:
            clients = sorted(self._clients.items(), key=lambda item: -len(item[0]))
            self._clients.clear()
        for _, client in clients:
            client.close()
