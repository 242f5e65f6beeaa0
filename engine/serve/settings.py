"""``cairn serve``'s settings, read in one place.

A setting comes from the option given on the command line, else from ``--config FILE``,
else from :data:`SERVE_DEFAULTS`. :func:`load_settings` reads the file (every problem at
once, with file:line), combines the three, checks what can be checked before serving
(listen address, token, runbook folders, ``--inputs``) and returns one frozen
:class:`ServeSettings`: the server is built from it and nothing else. The file's
``approvals:``, ``webhooks:`` and ``slack:`` sections (who may approve, where notices go, and the
secrets they name) are checked and read by :mod:`engine.serve.notify_config` on the same document.

Cheap to import: jsonschema and YAML are loaded only when a config file is read.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core.errors import CairnError
from engine.core.store.location import Location, is_url, locate, state_folder
from engine.serve.defaults import SERVE_DEFAULTS
from engine.serve.notify_config import NOTIFY_SCHEMA, build_notify, check_sections, read_secret_file
from engine.serve.notify_settings import NotifySettings

if TYPE_CHECKING:
    from engine.core.executors import ExecutionOptions
    from engine.core.policy import Policy

MIN_LEASE = 1.0
"""The shortest ``--lease``: renewed every third of it, a shorter one would lapse under a busy store."""

MAX_BODY = 1 << 20
"""Bytes a webhook may have (Alertmanager's groups are far smaller): more is a 413."""

_TIMEOUTS = ("header_timeout", "body_timeout", "idle_timeout")

SETTINGS = (
    "listen",
    "token_file",
    "allow_no_token",
    "inventory",
    "runbooks",
    "journal",
    "known_hosts",
    "workers",
    "cooldown",
    "grace",
    "lease",
    "automate",
    "breaker",
    "budget",
    "max_connections",
    "header_timeout",
    "body_timeout",
    "idle_timeout",
)
"""The settings both an option and the config file can give, by option name (``inputs`` aside:
the file's and the options' are merged, runbook by runbook, the options' values winning)."""


@dataclass(frozen=True)
class ServeSettings:
    """What ``cairn serve`` runs with: the options, the config file and the defaults, combined."""

    listen: str
    """``HOST:PORT`` as given (the start-up message shows it)."""
    host: str
    port: int
    token: str | None
    """The bearer token Alertmanager must send; ``None`` only when told to run without one on loopback."""
    journal: Location
    """The store: a SQLite file or a PostgreSQL URL (``--journal``, ``$CAIRN_JOURNAL``, ``journal:``)."""
    runbook_dirs: tuple[Path, ...]
    """Where the runbooks are: read at start, and again at SIGHUP."""
    inventory_sources: tuple[str, ...]
    options: ExecutionOptions
    """How runs reach their hosts (``--via``, ``--known-hosts`` …; its ``inventory_sources`` as above)."""
    cooldown: float
    workers: int
    policy: Policy
    grace: float
    """Seconds running runs get to finish at SIGTERM before they are cancelled and handed over."""
    lease: float
    """Seconds this server's work stays its own after its last renewal (renewed every third of it):
    how long another server waits before it takes over the work of one that stopped answering."""
    inputs: dict[str, dict[str, Any]]
    """Each runbook's input values for alert-started runs (``--inputs ID:@FILE``); defaults fill the rest."""
    max_body: int = MAX_BODY
    max_connections: int = SERVE_DEFAULTS["max_connections"]
    """HTTP connections open at once; past it the oldest idle (else the slowest) one is closed."""
    header_timeout: float = SERVE_DEFAULTS["header_timeout"]
    """Seconds a request head may take to arrive, from its first byte."""
    body_timeout: float = SERVE_DEFAULTS["body_timeout"]
    """Seconds a request body may take to arrive, from the end of its head."""
    idle_timeout: float = SERVE_DEFAULTS["idle_timeout"]
    """Seconds a connection may sit between requests (keep-alive) before it is closed."""
    notify: NotifySettings = field(default_factory=NotifySettings)
    """Who may approve what (``approvals:``), and where notices go (``webhooks:``, ``slack:``)."""
    warnings: tuple[str, ...] = ()
    """What to say at start-up about these settings (a webhook over plain http:// to another machine)."""


def load_settings(
    flags: Mapping[str, Any],
    *,
    config: Path | None = None,
    reach: ExecutionOptions | None = None,
    default_runbooks: Sequence[Path] = (),
    environ: Mapping[str, str] | None = None,
) -> ServeSettings:
    """The settings of ``cairn serve``: the options given (``flags``), else ``config``'s, else the defaults.

    ``flags`` holds the options by name (:data:`SETTINGS`, ``inputs``; others are ignored),
    ``None`` (or an empty list) for an option not given. ``reach`` is how runs reach hosts as
    the command line said; the file's ``known_hosts`` and ``inventory`` fill what it did not.
    ``default_runbooks``: the runbook folders when neither names any. A :class:`CairnError`
    says the first thing wrong; a config file's problems are said all at once.
    """
    from engine.core.executors import ExecutionOptions  # noqa: PLC0415
    from engine.core.policy import Policy  # noqa: PLC0415 - the parser reads this module's defaults: cheap

    env = os.environ if environ is None else environ
    signing_secret = slack_signing_secret(flags.get("slack_signing_secret_file"), config)
    from_file = read_config(config, environ=env, signing_secret=signing_secret) if config is not None else {}
    if signing_secret is not None and from_file.get("notify", NotifySettings()).slack is None:
        raise CairnError(f"--slack-signing-secret-file: the config file {config} has no slack: section")
    merged = combine(flags, from_file)
    host, port = parse_listen(merged["listen"])
    token = read_token(merged["token_file"], env)
    check_listen(host, token, merged["allow_no_token"])
    runbook_dirs = tuple(Path(p) for p in merged["runbooks"] or ()) or tuple(default_runbooks)
    missing = [str(d) for d in runbook_dirs if not d.exists()]
    if missing:
        raise CairnError(f"runbook folder {', '.join(missing)} does not exist; point --runbooks at one")
    inventory = tuple(merged["inventory"] or ())
    known_hosts = merged["known_hosts"]
    options = replace(
        reach if reach is not None else ExecutionOptions(),
        inventory_sources=inventory,
        known_hosts=Path(known_hosts).expanduser() if known_hosts else None,
    )
    return ServeSettings(
        listen=merged["listen"],
        host=host,
        port=port,
        token=token,
        journal=store_location(merged["journal"], env),
        runbook_dirs=runbook_dirs,
        inventory_sources=inventory,
        options=options,
        cooldown=merged["cooldown"],
        workers=merged["workers"],
        policy=Policy(automate=tuple(merged["automate"]), breaker=merged["breaker"], budget=merged["budget"]),
        grace=merged["grace"],
        lease=check_lease(merged["lease"]),
        inputs=runbook_inputs(flags.get("inputs") or [], from_file.get("inputs", {})),
        notify=from_file.get("notify", NotifySettings()),
        warnings=tuple(from_file.get("warnings", ())),
        **http_limits(merged),
    )


def slack_signing_secret(path: str | None, config: Path | None) -> str | None:
    """``--slack-signing-secret-file``'s secret (``None`` when not given); it verifies ``POST
    /slack/actions`` of the config's ``slack:``, so it needs a config that has one."""
    if not path:
        return None
    if config is None:
        raise CairnError(
            "--slack-signing-secret-file is for the slack: section of a --config file (channel, bot_token_file …)"
        )
    return read_secret_file(Path(path), "--slack-signing-secret-file")


def http_limits(merged: Mapping[str, Any]) -> dict[str, Any]:
    """The HTTP side's limits from the combined settings; :class:`CairnError` for one that is not positive."""
    limits = {key: merged[key] for key in ("max_connections", *_TIMEOUTS)}
    if limits["max_connections"] < 1:
        raise CairnError(
            f"--max-connections (max_connections) is {limits['max_connections']}: give 1 or more"
        )
    for key in _TIMEOUTS:
        if not limits[key] > 0:
            raise CairnError(
                f"--{key.replace('_', '-')} ({key}) is {limits[key]:g}: give a number of seconds above 0"
            )
    return limits


def store_location(given: str | None, environ: Mapping[str, str]) -> Location:
    """The store ``--journal`` (or the config's ``journal``) names, else ``$CAIRN_JOURNAL``, else the default file."""
    value = given or environ.get("CAIRN_JOURNAL") or ""
    return locate(value) if value else Location(path=state_folder() / "journal.db")


def check_lease(seconds: float) -> float:
    """``--lease``: a :class:`CairnError` unless it leaves the heartbeat (a third of it) room to renew."""
    if not seconds >= MIN_LEASE:
        raise CairnError(
            f"--lease (lease) is {seconds:g}: give at least {MIN_LEASE:g} second; the lease is renewed "
            "every third of it, and another server takes the work over once it runs out"
        )
    return seconds


def combine(flags: Mapping[str, Any], from_file: Mapping[str, Any]) -> dict[str, Any]:
    """Each of :data:`SETTINGS`: the option given, else the file's, else the default (else ``None``).

    An option counts as given unless it is ``None`` or an empty list (what argparse leaves
    for an option not on the command line).
    """
    merged: dict[str, Any] = {}
    for key in SETTINGS:
        given = flags.get(key)
        if given is not None and given != []:
            merged[key] = given
        elif key in from_file:
            merged[key] = from_file[key]
        else:
            merged[key] = SERVE_DEFAULTS.get(key)
    return merged


def check_listen(host: str, token: str | None, allow_no_token: bool) -> None:
    """Refuse to serve without a token, except on loopback when told to; :class:`CairnError` says why."""
    if token:
        return
    if not allow_no_token:
        raise CairnError(
            "no webhook token: give one with --token-file PATH or $CAIRN_WEBHOOK_TOKEN "
            "(Alertmanager sends it with http_config.authorization); --allow-no-token works on loopback only"
        )
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise CairnError(f"--allow-no-token is for loopback addresses only, not {host!r}: give a token")


def read_token(path: str | None, environ: Mapping[str, str]) -> str | None:
    """The token from ``--token-file`` (first line) or ``$CAIRN_WEBHOOK_TOKEN``; ``None`` if neither."""
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CairnError(f"cannot read the token file {path}: {exc.strerror}") from exc
        if not text:
            raise CairnError(f"the token file {path} is empty")
        return text
    return environ.get("CAIRN_WEBHOOK_TOKEN") or None


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port); :class:`CairnError` if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CairnError(f"--listen {text!r}: write HOST:PORT, e.g. 127.0.0.1:9095")
    return host.strip("[]"), int(port)


# --------------------------------------------------------------------------- the config file

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "listen": {"type": "string", "description": "HOST:PORT"},
        "token_file": {"type": "string"},
        "allow_no_token": {"type": "boolean"},
        "inventory": {"type": ["string", "array"], "items": {"type": "string"}},
        "runbooks": {"type": ["string", "array"], "items": {"type": "string"}},
        "journal": {"type": "string"},
        "known_hosts": {"type": "string"},
        "workers": {"type": "integer", "minimum": 1, "maximum": 500},
        "cooldown": {"type": ["number", "string"]},
        "grace": {"type": ["number", "string"]},
        "lease": {"type": ["number", "string"], "description": "a duration: 3, 3s, 1500ms"},
        "max_connections": {"type": "integer", "minimum": 1, "maximum": 100_000},
        "header_timeout": {"type": ["number", "string"], "description": "a duration: 10, 10s, 500ms"},
        "body_timeout": {"type": ["number", "string"]},
        "idle_timeout": {"type": ["number", "string"]},
        "inputs": {
            "type": "object",
            "description": "runbook id -> its input values (a mapping) or a YAML/JSON file of them",
            "additionalProperties": {"type": ["object", "string"]},
        },
        "policy": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "automate": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "breaker": {"type": "integer", "minimum": 1},
                "budget": {"type": "integer", "minimum": 1},
            },
        },
        **NOTIFY_SCHEMA,
    },
}
"""What ``cairn serve --config FILE`` may say: the same settings as its options, and who may
approve (``approvals:``) and where notices go (``webhooks:``, ``slack:``)."""

_DURATIONS = ("cooldown", "grace", "lease", *_TIMEOUTS)
_PATH_KEYS = ("token_file", "inventory", "runbooks", "journal", "known_hosts")


def read_config(
    path: Path, *, environ: Mapping[str, str] | None = None, signing_secret: str | None = None
) -> dict[str, Any]:
    """``cairn serve --config FILE``: its settings by option name (``automate``, ``breaker`` … flattened),
    and ``notify`` (:class:`NotifySettings`: ``approvals:``, ``webhooks:``, ``slack:``, their secrets
    read from their files or ``environ``) with the ``warnings`` to say about them.

    Relative paths are relative to the file's folder. Every problem is reported at once,
    with file:line, as a :class:`CairnError`.
    """
    from jsonschema import Draft202012Validator  # noqa: PLC0415

    from engine.core.model import parse_duration  # noqa: PLC0415
    from engine.core.yamlsource import pointer, read_yaml_file  # noqa: PLC0415

    doc = read_yaml_file(path)
    if not doc.problems and not isinstance(doc.data, dict):
        doc.add("", "a cairn serve config is a mapping of settings, e.g. 'listen: 127.0.0.1:9095'")
    if not doc.problems:
        for error in Draft202012Validator(CONFIG_SCHEMA).iter_errors(doc.data):
            where = pointer(tuple(error.absolute_path))
            if error.validator == "additionalProperties" and isinstance(error.instance, dict):
                known = sorted(error.schema.get("properties", {}))
                for key in (k for k in error.instance if k not in known):  # at the unknown key's own line
                    doc.add(
                        pointer((*error.absolute_path, key)),
                        f"unknown setting {key!r}; the settings are: {', '.join(known)}",
                    )
            else:
                doc.add(where, error.message)
    settings: dict[str, Any] = {}
    if isinstance(doc.data, dict):
        check_sections(doc, doc.data)
        for key in _DURATIONS:
            if isinstance(doc.data.get(key), int | float | str) and not isinstance(doc.data[key], bool):
                try:
                    settings[key] = parse_duration(doc.data[key])
                except ValueError as exc:
                    doc.add(f"/{key}", str(exc))
    if not doc.problems:
        built = build_notify(
            doc,
            doc.data,
            path.parent,
            os.environ if environ is None else environ,
            signing_secret=signing_secret,
        )
        settings["notify"], settings["warnings"] = built.notify, built.warnings
    if not doc.problems:
        data = {k: v for k, v in doc.data.items() if k not in NOTIFY_SCHEMA}
        policy = data.pop("policy", {}) or {}
        settings = data | policy | settings
        for key in _PATH_KEYS:
            value = settings.get(key)
            if isinstance(value, str) and key in ("inventory", "runbooks"):
                value = settings[key] = [value]
            if isinstance(value, list):
                settings[key] = [str(path.parent / Path(v).expanduser()) for v in value]
            elif isinstance(value, str) and not (key == "journal" and is_url(value)):
                settings[key] = str(path.parent / Path(value).expanduser())
        for runbook_id, given in dict(settings.get("inputs") or {}).items():
            if isinstance(given, str):
                settings["inputs"][runbook_id] = str(path.parent / Path(given.lstrip("@")).expanduser())
    if doc.problems:
        ordered = sorted(doc.problems, key=lambda p: (p.line, p.column))
        raise CairnError("the config file has problems:\n" + "\n".join(f"  {p}" for p in ordered))
    return settings


def runbook_inputs(items: list[str], from_config: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``--inputs ID:@FILE`` / ``--inputs ID:KEY=VALUE`` (and the config's ``inputs``) by runbook id."""
    from engine.core.inputs import parse_extra_vars  # noqa: PLC0415

    found: dict[str, dict[str, Any]] = {}
    for runbook_id, given in (from_config or {}).items():
        values = given if isinstance(given, dict) else parse_extra_vars([f"@{given}"])
        found.setdefault(runbook_id, {}).update(values)
    for item in items:
        runbook_id, sep, rest = item.partition(":")
        if not sep or not runbook_id or not rest:
            raise CairnError(f"--inputs {item!r}: write RUNBOOK:@FILE or RUNBOOK:KEY=VALUE")
        found.setdefault(runbook_id, {}).update(parse_extra_vars([rest]))
    return found
