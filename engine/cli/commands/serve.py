"""``cairn serve``: parse its options, hand them to :mod:`engine.serve.settings`, serve.

What a setting means, its default, and how ``--config FILE`` and the options given combine
are :mod:`engine.serve.settings`' to say; this module only declares the options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.common import default_runbook_dirs, execution_options, jobs
from engine.cli.options import Commands, forks


def register(commands: Commands) -> None:
    from engine.serve.defaults import SERVE_DEFAULTS as DEFAULT  # noqa: PLC0415 - cheap: stdlib only

    serve = commands.add(
        "serve",
        cmd_serve,
        "take Prometheus Alertmanager webhooks: run the matching runbooks on the alert's target; "
        "remediate where the runbook and --automate allow it, else wait for the approvers the config's "
        "approvals: names (cairn approve, the TUI, Slack)",
        [commands.runbooks, commands.journal, commands.reach],
    )
    # No defaults here (None: not given): a setting not given comes from --config, else the default.
    serve.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file with the same settings (listen, token_file, inventory, runbooks, journal, workers, "
        "cooldown, grace, lease, max_connections, header_timeout, body_timeout, idle_timeout, "
        "inputs: {RUNBOOK: FILE or mapping}, policy: {automate, breaker, budget}), and approvals: (who may "
        "approve what, quorum, expiry), webhooks: and slack: (where notices go; docs/approvals.md, "
        "docs/notifications.md, docs/slack.md); options given here win",
    )
    serve.add_argument("--listen", metavar="HOST:PORT", help=f"default {DEFAULT['listen']}")
    serve.add_argument(
        "-i",
        "--inventory",
        action="append",
        metavar="INV",
        help="Ansible inventory the alerts' targets are in",
    )
    serve.add_argument(
        "--token-file",
        metavar="PATH",
        help="bearer token Alertmanager must send (default: $CAIRN_WEBHOOK_TOKEN)",
    )
    serve.add_argument(
        "--allow-no-token",
        action="store_true",
        default=None,
        help="serve without a token (loopback addresses only)",
    )
    serve.add_argument(
        "--cooldown",
        type=float,
        metavar="SECONDS",
        help=f"after a run, the same runbook and target wait this long before an alert runs them again ({DEFAULT['cooldown']:g})",
    )
    serve.add_argument(
        "--workers", type=forks, metavar="N", help=f"runs at once (default {DEFAULT['workers']})"
    )
    serve.add_argument(
        "--automate",
        action="append",
        metavar="RUNBOOK",
        help="let this runbook's steps marked `automatic: true` remediate without a human (repeatable; "
        "shell patterns like 'node-*'); default: every remediation waits for `cairn approve`",
    )
    serve.add_argument(
        "--breaker",
        type=forks,
        metavar="N",
        help=f"at most N automatic remediations per host per hour; then escalate to a human (default {DEFAULT['breaker']})",
    )
    serve.add_argument(
        "--budget",
        type=forks,
        metavar="M",
        help=f"at most M hosts being remediated at once across the fleet; then escalate (default {DEFAULT['budget']})",
    )
    serve.add_argument(
        "--grace",
        type=float,
        metavar="SECONDS",
        help="at SIGTERM, running runs get this long to finish; then they are cancelled and handed over: "
        f"another server (or the next start) resumes them (default {DEFAULT['grace']:g})",
    )
    serve.add_argument(
        "--lease",
        type=float,
        metavar="SECONDS",
        help="this server's work stays its own this long after its last renewal (renewed every third of "
        "it); servers sharing a --journal take over the work of one silent longer than that "
        f"(default {DEFAULT['lease']:g})",
    )
    limits = serve.add_argument_group(
        "HTTP limits",
        "idle, slow and stalled clients cannot use up the file descriptors a real alert needs",
    )
    limits.add_argument(
        "--max-connections",
        type=_connections,
        metavar="N",
        help=f"HTTP connections open at once (default {DEFAULT['max_connections']}, and at most half the "
        "open-file limit, `ulimit -n`); past it the longest idle, else the slowest, is closed",
    )
    limits.add_argument(
        "--header-timeout",
        type=float,
        metavar="SECONDS",
        help="a request's head must all arrive within this long of its first byte, else 408 and closed "
        f"(default {DEFAULT['header_timeout']:g})",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        metavar="SECONDS",
        help=f"a request's body must all arrive within this long of its head (default {DEFAULT['body_timeout']:g})",
    )
    limits.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help=f"a connection idle this long between requests is closed (default {DEFAULT['idle_timeout']:g})",
    )
    serve.add_argument(
        "--slack-signing-secret-file",
        metavar="FILE",
        help="Slack's signing secret, which verifies POST /slack/actions (first line; the file must be readable "
        "by this account only: chmod 600); else the config's slack: signing_secret_file, else "
        "$CAIRN_SLACK_SIGNING_SECRET",
    )
    serve.add_argument(
        "--inputs",
        action="append",
        metavar="RUNBOOK:@FILE",
        help="input values for a runbook's alert-started runs: RUNBOOK:@FILE (YAML/JSON) or "
        "RUNBOOK:KEY=VALUE (repeatable); the runbook's defaults fill the rest",
    )


def _connections(text: str) -> int:
    """An argparse type: a whole number of connections, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("give 1 or more")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.serve.server import run  # noqa: PLC0415
    from engine.serve.settings import load_settings  # noqa: PLC0415

    settings = load_settings(
        vars(args),
        config=Path(args.config) if args.config else None,
        reach=execution_options(args),
        default_runbooks=default_runbook_dirs(),
    )
    for warning in settings.warnings:
        print(f"cairn serve: warning: {warning}", file=sys.stderr)
    return run(settings, jobs=jobs())
