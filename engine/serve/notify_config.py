"""The config's ``approvals:``, ``webhooks:`` and ``slack:`` sections: their schema, the checks the
schema cannot make, and the secrets they name, read into one :class:`NotifySettings`.

:mod:`engine.serve.settings` reads the config file; this module adds, on the same document, every
problem of these three sections with its file:line (a rule nobody can satisfy, a webhook URL that
is not HTTP, a secret file other accounts can read …). Secrets come from files (which must be
``0600``: readable by the server's account only) or the environment — ``$CAIRN_WEBHOOK_SECRET_<NAME>``,
``$CAIRN_SLACK_BOT_TOKEN``, ``$CAIRN_SLACK_APP_TOKEN``, ``$CAIRN_SLACK_SIGNING_SECRET`` — never
from the command line, and no message shows one. A webhook's URL is treated as a secret too
(Mattermost and Teams put their token in it): never shown.
"""

from __future__ import annotations

import ipaddress
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from engine.core.approval_policy import ApprovalPolicy
from engine.core.errors import CairnError
from engine.core.notices import WEBHOOK_KINDS, NoticeKind
from engine.serve.notify_settings import NotifySettings, SlackSettings, WebhookSettings

if TYPE_CHECKING:
    from engine.core.yamlsource import Document

SEVERITIES = ("info", "warning", "critical")
FORMATS = ("cairn", "slack-compatible")
APPROVER_KEYS = ("users", "groups", "slack_users", "slack_usergroups")
SLACK_API = "https://slack.com/api/"

_DURATION = {"type": ["number", "string"], "description": "a duration: 90s, 30m, 24h"}
_NAMES = {"type": ["string", "array"], "items": {"type": "string", "minLength": 1}}

NOTIFY_SCHEMA: dict[str, Any] = {
    "approvals": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "expires": _DURATION,
            "people": {
                "type": "object",
                "description": "person -> {unix: account, slack: Uxxx}: one person, counted once",
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "properties": {
                        "unix": {"type": "string", "minLength": 1},
                        "slack": {"type": "string", "pattern": "^[UW][A-Z0-9]+$"},
                    },
                },
            },
            "rules": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["approvers"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "runbooks": _NAMES,
                        "tags": _NAMES,
                        "severity": {"type": ["string", "array"], "items": {"enum": list(SEVERITIES)}},
                        "approvers": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {key: _NAMES for key in APPROVER_KEYS},
                        },
                        "quorum": {"type": "integer", "minimum": 1},
                        "expires": _DURATION,
                    },
                },
            },
        },
    },
    "webhooks": {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "url"],
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"},
                "url": {"type": "string", "minLength": 1},
                "secret_file": {"type": "string", "minLength": 1},
                "events": {"type": "array", "minItems": 1, "items": {"enum": [k.value for k in NoticeKind]}},
                "format": {"enum": list(FORMATS)},
                "timeout": _DURATION,
            },
        },
    },
    "slack": {
        "type": "object",
        "additionalProperties": False,
        "required": ["channel"],
        "properties": {
            "channel": {"type": "string", "minLength": 1},
            "bot_token_file": {"type": "string", "minLength": 1},
            "app_token_file": {"type": "string", "minLength": 1},
            "signing_secret_file": {"type": "string", "minLength": 1},
            "api_url": {"type": "string", "minLength": 1},
        },
    },
}
"""The three sections, as properties of :data:`engine.serve.settings.CONFIG_SCHEMA`."""


def read_secret_file(path: Path, what: str) -> str:
    """A secret's first line from ``path``, which only its owner may read (:class:`CairnError` else)."""
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            raise CairnError(
                f"{what} {path} is open to other accounts (mode {stat.S_IMODE(mode):04o}): "
                f"run chmod 600 {path}"
            )
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CairnError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise CairnError(f"{what} {path} is not UTF-8 text") from None
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise CairnError(f"{what} {path} is empty")
    return secret


def secret_env_name(webhook: str) -> str:
    """``$CAIRN_WEBHOOK_SECRET_<NAME>`` for a webhook's name (letters and digits upper-cased, the rest ``_``)."""
    return "CAIRN_WEBHOOK_SECRET_" + re.sub(r"[^A-Z0-9]", "_", webhook.upper())


def check_sections(doc: Document, data: Mapping[str, Any]) -> None:
    """The problems of ``approvals:``, ``webhooks:`` and ``slack:`` the schema cannot see, added to
    ``doc`` (values of the wrong type are the schema's to report, and skipped here)."""
    approvals = data.get("approvals")
    if isinstance(approvals, dict):
        _check_approvals(doc, approvals)
    webhooks = data.get("webhooks")
    if isinstance(webhooks, list):
        _check_webhooks(doc, webhooks)
    slack = data.get("slack")
    if isinstance(slack, dict) and isinstance(slack.get("api_url"), str) and not _is_http(slack["api_url"]):
        doc.add("/slack/api_url", "api_url must be an http:// or https:// URL")


def _check_approvals(doc: Document, approvals: Mapping[str, Any]) -> None:
    _check_duration(doc, "/approvals/expires", approvals.get("expires"))
    rules = approvals.get("rules")
    for number, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict):
            continue
        at = f"/approvals/rules/{number}"
        _check_duration(doc, f"{at}/expires", rule.get("expires"))
        severity = rule.get("severity")
        if isinstance(severity, str) and severity not in SEVERITIES:
            doc.add(f"{at}/severity", f"{severity!r} is not one of {', '.join(SEVERITIES)}")
        approvers = rule.get("approvers")
        if not isinstance(approvers, dict):
            continue
        named = {key: _names(approvers.get(key)) for key in APPROVER_KEYS}
        if not any(named.values()):
            doc.add(
                f"{at}/approvers",
                "this rule names no approvers: nobody could ever approve what it matches; give users, "
                "groups, slack_users or slack_usergroups",
            )
            continue
        quorum = rule.get("quorum", 1)
        if not isinstance(quorum, int) or isinstance(quorum, bool):
            continue
        for only, who in (("users", "users"), ("slack_users", "Slack users")):
            others = [key for key in APPROVER_KEYS if key != only and named[key]]
            if named[only] and not others and quorum > len(named[only]):
                doc.add(
                    f"{at}/quorum",
                    f"quorum {quorum} but only {len(named[only])} {who} can approve: name more approvers "
                    "or lower the quorum",
                )


def _check_webhooks(doc: Document, webhooks: list[Any]) -> None:
    seen: set[str] = set()
    for number, hook in enumerate(webhooks):
        if not isinstance(hook, dict):
            continue
        at = f"/webhooks/{number}"
        name = hook.get("name")
        if isinstance(name, str):
            if name in seen:
                doc.add(f"{at}/name", f"another webhook is named {name!r}: each needs its own name")
            seen.add(name)
        url = hook.get("url")
        if isinstance(url, str) and not _is_http(url):
            # The URL itself is never shown: Mattermost's and Teams' hold their token.
            doc.add(
                f"{at}/url",
                "url must be an http:// or https:// URL (the value is not shown: it may hold a token)",
            )
        timeout = hook.get("timeout")
        _check_duration(doc, f"{at}/timeout", timeout)


def _check_duration(doc: Document, at: str, value: Any) -> None:
    from engine.core.model import parse_duration  # noqa: PLC0415

    if value is None or isinstance(value, bool) or not isinstance(value, int | float | str):
        return
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        doc.add(at, str(exc))
        return
    if seconds <= 0:
        doc.add(at, f"{value!r} is no time at all: give a duration above 0, e.g. 30m")


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def _is_http(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _plain_http_elsewhere(url: str) -> bool:
    """An ``http://`` URL whose host is not loopback: what it carries crosses the network unencrypted."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


# --------------------------------------------------------------------------- building the settings


@dataclass(frozen=True)
class NotifyBuilt:
    """What :func:`build_notify` made of the three sections: the settings, and what to warn about."""

    notify: NotifySettings
    warnings: tuple[str, ...]
    """Said at start-up (a webhook over plain http:// to another machine)."""


def build_notify(
    doc: Document,
    data: Mapping[str, Any],
    folder: Path,
    environ: Mapping[str, str],
    *,
    signing_secret: str | None = None,
) -> NotifyBuilt:
    """The three sections (already checked) as :class:`NotifySettings`, their secrets read; a problem
    with a secret is added to ``doc`` at the setting that names it. ``folder``: relative secret files
    are relative to it (the config file's folder). ``signing_secret``: ``--slack-signing-secret-file``'s."""
    warnings: list[str] = []
    policy = ApprovalPolicy.of(data.get("approvals"))
    hooks = tuple(
        _webhook(doc, f"/webhooks/{n}", hook, folder, environ, warnings)
        for n, hook in enumerate(data.get("webhooks") or ())
    )
    slack = None
    if data.get("slack") is not None:
        slack = _slack(doc, data["slack"], folder, environ, signing_secret, warnings)
    return NotifyBuilt(NotifySettings(approvals=policy, webhooks=hooks, slack=slack), tuple(warnings))


def _webhook(
    doc: Document,
    at: str,
    hook: Mapping[str, Any],
    folder: Path,
    environ: Mapping[str, str],
    warnings: list[str],
) -> WebhookSettings:
    from engine.core.model import parse_duration  # noqa: PLC0415

    name = str(hook["name"])
    secret = _secret(
        doc, f"{at}/secret_file", hook.get("secret_file"), folder, f"webhook {name}'s secret_file"
    )
    secret = secret or environ.get(secret_env_name(name), "")
    if _plain_http_elsewhere(hook["url"]):
        warnings.append(
            f"webhook:{name} posts over plain http:// to a host that is not loopback: anyone on the way "
            "can read its notices (and the token in its URL); use https://"
        )
    events = hook.get("events")
    return WebhookSettings(
        name=name,
        url=str(hook["url"]),
        secret=secret,
        kinds=tuple(NoticeKind(kind) for kind in events) if events else WEBHOOK_KINDS,
        format=str(hook.get("format", "cairn")),
        timeout=parse_duration(hook.get("timeout", 10.0)),
    )


def _slack(
    doc: Document,
    slack: Mapping[str, Any],
    folder: Path,
    environ: Mapping[str, str],
    signing_secret: str | None,
    warnings: list[str],
) -> SlackSettings | None:
    bot = _secret(doc, "/slack/bot_token_file", slack.get("bot_token_file"), folder, "slack bot_token_file")
    app = _secret(doc, "/slack/app_token_file", slack.get("app_token_file"), folder, "slack app_token_file")
    signing = signing_secret or _secret(
        doc,
        "/slack/signing_secret_file",
        slack.get("signing_secret_file"),
        folder,
        "slack signing_secret_file",
    )
    bot = bot or environ.get("CAIRN_SLACK_BOT_TOKEN", "")
    app = app or environ.get("CAIRN_SLACK_APP_TOKEN", "")
    signing = signing or environ.get("CAIRN_SLACK_SIGNING_SECRET", "")
    if not bot and "bot_token_file" not in slack:
        doc.add(
            "/slack",
            "slack needs its bot token (xoxb-…): bot_token_file, or $CAIRN_SLACK_BOT_TOKEN",
            key=True,
        )
    if not app and not signing and not {"app_token_file", "signing_secret_file"} & set(slack):
        doc.add(
            "/slack",
            "buttons need either Socket Mode (app_token_file, or $CAIRN_SLACK_APP_TOKEN) or POST /slack/actions "
            "(signing_secret_file, --slack-signing-secret-file, or $CAIRN_SLACK_SIGNING_SECRET)",
            key=True,
        )
    api_url = str(slack.get("api_url") or SLACK_API)
    if _plain_http_elsewhere(api_url):
        warnings.append(
            "slack api_url is plain http:// to a host that is not loopback: the bot token crosses the network "
            "unencrypted; use https://"
        )
    if not bot or (not app and not signing):
        return None
    return SlackSettings(
        channel=str(slack["channel"]),
        bot_token=bot,
        signing_secret=signing,
        app_token=app,
        api_url=api_url if api_url.endswith("/") else api_url + "/",
    )


def _secret(doc: Document, at: str, given: Any, folder: Path, what: str) -> str:
    """The secret in the file ``given`` names (relative to ``folder``); ``""`` when none is named or
    it cannot be read (then the problem is in ``doc``)."""
    if not isinstance(given, str):
        return ""
    try:
        return read_secret_file(folder / Path(given).expanduser(), what)
    except CairnError as exc:
        doc.add(at, str(exc))
        return ""
