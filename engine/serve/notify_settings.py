"""What ``cairn serve`` is told about approvals and notifications: the config's ``approvals:``,
``webhooks:`` and ``slack:`` sections, read by :mod:`engine.serve.settings` into these.

Secrets (a webhook's signing secret, Slack's tokens and signing secret) are read from files or
the environment, never from the command line, and held only here; ``repr`` never shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.core.approval_policy import ApprovalPolicy
from engine.core.notices import WEBHOOK_KINDS, NoticeKind


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """One outgoing webhook (``webhooks:`` in the config)."""

    name: str
    """The sink's name is ``webhook:<name>``."""
    url: str = field(repr=False)
    """Where to POST (its path and query may hold a token, as Mattermost's and Teams' do: never logged)."""
    secret: str = field(default="", repr=False)
    """HMAC-SHA256 key of the ``X-Cairn-Signature`` header (``secret_file`` / ``$CAIRN_WEBHOOK_SECRET_<NAME>``)."""
    kinds: tuple[NoticeKind, ...] = WEBHOOK_KINDS
    """The notices it is sent (``events:``)."""
    format: str = "cairn"
    """``cairn`` (the documented payload), ``slack-compatible`` (``{"text": …}``: Mattermost's and
    Teams' incoming webhooks take it) ."""
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class SlackSettings:
    """Slack (``slack:`` in the config)."""

    channel: str
    """Where escalations are posted (a channel id such as ``C0123``, or ``#name``)."""
    bot_token: str = field(repr=False)
    """``xoxb-…`` (``bot_token_file`` / ``$CAIRN_SLACK_BOT_TOKEN``)."""
    signing_secret: str = field(default="", repr=False)
    """Verifies ``POST /slack/actions`` (``--slack-signing-secret-file``, ``signing_secret_file``,
    ``$CAIRN_SLACK_SIGNING_SECRET``); required for the HTTP endpoint."""
    app_token: str = field(default="", repr=False)
    """``xapp-…``: Socket Mode (no inbound port) when given (``app_token_file`` / ``$CAIRN_SLACK_APP_TOKEN``)."""
    api_url: str = "https://slack.com/api/"
    """The Web API's base URL (tests point it at the local stand-in of Slack)."""

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token)


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """Approvals and notifications, as ``cairn serve`` runs with them."""

    approvals: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    webhooks: tuple[WebhookSettings, ...] = ()
    slack: SlackSettings | None = None
