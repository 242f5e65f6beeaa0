"""Who may approve what: the team's approval policy, and the judgement of one decision under it.

The policy is the ``approvals:`` section of ``cairn serve``'s config. Its rules are matched
against a runbook (id patterns, tags, severity); the first that matches says who may approve
(Unix users and groups, Slack users and user groups, or people of the ``people:`` map), how many
distinct people must approve (``quorum``) and how long the request stays open (``expires``). No
rule matching: the default rule — one approver, any Unix account that can write the store, no
Slack user unless named (a Slack channel is wider than the store's permissions), 24 hours.

When ``cairn serve`` escalates an entry it fixes the rule's answer on the entry as a
:class:`Requirement` (with who asked for the run, and when the request expires), so ``cairn
approve``, the TUI and a Slack button judge every decision by the same words, with no copy of
the config and no runbook loaded: :func:`judge`. Nobody approves their own request, nobody counts
twice, an expired request is refused; every attempt is journaled with its outcome
(:meth:`engine.core.alert_queue.AlertQueue.decide`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from fnmatch import fnmatchcase
from typing import Any

from engine.core.identity import Identity, identity_of

DEFAULT_EXPIRES = 24 * 3600.0
"""How long an escalated entry waits for its approvals when the policy does not say."""


@dataclass(frozen=True, slots=True)
class Approvers:
    """Who may decide: any of these. All empty and ``anyone_local``: any Unix account."""

    users: tuple[str, ...] = ()
    """Unix account names, or people of the ``people:`` map."""
    groups: tuple[str, ...] = ()
    """Unix groups."""
    slack_users: tuple[str, ...] = ()
    """Slack user ids (``U…``)."""
    slack_usergroups: tuple[str, ...] = ()
    """Slack user group ids (``S…``) or handles."""
    anyone_local: bool = False
    """The default rule's: any Unix account that can write the store."""

    def describe(self) -> str:
        """``group sre or users alice, bob``; ``any local account`` for the default."""
        said = []
        if self.users:
            said.append(("user " if len(self.users) == 1 else "users ") + ", ".join(self.users))
        if self.groups:
            said.append(("group " if len(self.groups) == 1 else "groups ") + ", ".join(self.groups))
        if self.slack_users:
            said.append("Slack " + ", ".join(self.slack_users))
        if self.slack_usergroups:
            said.append("Slack group " + ", ".join(self.slack_usergroups))
        if self.anyone_local:
            said.append("any local account that can write the store")
        return " or ".join(said) or "nobody"

    def as_data(self) -> dict[str, Any]:
        return {
            "users": list(self.users),
            "groups": list(self.groups),
            "slack_users": list(self.slack_users),
            "slack_usergroups": list(self.slack_usergroups),
            "anyone_local": self.anyone_local,
        }

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Approvers:
        return cls(
            users=_names(data.get("users")),
            groups=_names(data.get("groups")),
            slack_users=_names(data.get("slack_users")),
            slack_usergroups=_names(data.get("slack_usergroups")),
            anyone_local=bool(data.get("anyone_local", False)),
        )


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of the policy: which runbooks, then who, how many, how long."""

    name: str
    approvers: Approvers
    runbooks: tuple[str, ...] = ()
    """Id patterns (``node-*``); empty: any runbook."""
    tags: tuple[str, ...] = ()
    """Any of these tags; empty: any."""
    severity: tuple[str, ...] = ()
    """Any of these severities; empty: any."""
    quorum: int = 1
    expires: float = DEFAULT_EXPIRES

    def matches(self, runbook_id: str, tags: Sequence[str], severity: str) -> bool:
        if self.runbooks and not any(fnmatchcase(runbook_id, p) for p in self.runbooks):
            return False
        if self.tags and not set(self.tags) & set(tags):
            return False
        return not self.severity or severity in self.severity


DEFAULT_RULE = Rule("default", Approvers(anyone_local=True))


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """The ``approvals:`` section: rules, first match wins, and who is who."""

    rules: tuple[Rule, ...] = ()
    people: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Person → ``{"unix": account, "slack": user id}``: one person, counted once, never approving
    what they asked for from another front end."""
    expires: float = DEFAULT_EXPIRES

    def rule_for(self, runbook_id: str, tags: Sequence[str], severity: str) -> Rule:
        for rule in self.rules:
            if rule.matches(runbook_id, tags, severity):
                return rule
        return Rule("default", DEFAULT_RULE.approvers, expires=self.expires)

    def requirement(
        self,
        runbook_id: str,
        tags: Sequence[str],
        severity: str,
        *,
        escalated_at: float,
        requested_by: Identity | None = None,
    ) -> Requirement:
        """What an entry of ``runbook_id`` escalated at ``escalated_at`` needs to be approved."""
        rule = self.rule_for(runbook_id, tags, severity)
        return Requirement(
            rule=rule.name,
            approvers=rule.approvers,
            quorum=rule.quorum,
            expires_at=escalated_at + rule.expires,
            people={k: dict(v) for k, v in self.people.items()},
            requested_by=requested_by,
        )

    def describe(self) -> str:
        """One line for the server's start-up message."""
        if not self.rules:
            return "approvals: one approver, any local account that can write the store (no approvals: rules)"
        return "approvals: " + "; ".join(
            f"{r.name}: {r.quorum} of {r.approvers.describe()}" for r in self.rules
        )

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> ApprovalPolicy:
        """From the config's ``approvals:`` (validated by the config schema; durations in seconds)."""
        if not data:
            return cls()
        from engine.core.model import parse_duration  # noqa: PLC0415

        expires = parse_duration(data.get("expires", DEFAULT_EXPIRES))
        rules = []
        for number, item in enumerate(data.get("rules") or (), start=1):
            rules.append(
                Rule(
                    name=str(item.get("name") or f"rule {number}"),
                    approvers=Approvers.of(item.get("approvers") or {}),
                    runbooks=_names(item.get("runbooks")),
                    tags=_names(item.get("tags")),
                    severity=_names(item.get("severity")),
                    quorum=int(item.get("quorum", 1)),
                    expires=parse_duration(item.get("expires", expires)),
                )
            )
        people = {
            str(person): {str(k): str(v) for k, v in (accounts or {}).items()}
            for person, accounts in (data.get("people") or {}).items()
        }
        return cls(tuple(rules), people, expires)


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


class Action(Enum):
    APPROVE = "approve"
    DECLINE = "decline"


class Outcome(Enum):
    """What became of one attempt (every one is journaled)."""

    COUNTED = "counted"
    """An approval that counts toward the quorum; more are needed."""
    APPROVED = "approved"
    """The approval that met the quorum: the entry is queued to remediate."""
    DECLINED = "declined"
    """A decline: the entry ends, nothing is changed."""
    REFUSED = "refused"
    """Not allowed: the reason says why; the entry is unchanged."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One journaled decision attempt on an entry."""

    id: int
    entry_id: int
    at: float
    action: Action
    outcome: Outcome
    who: Identity
    reason: str = ""
    message: str = ""
    """What the decider was told (a refusal's reason, the quorum's progress)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """Where an entry's quorum stands."""

    quorum: int
    approved: tuple[str, ...]
    """The people who approved (short names), in order."""

    @property
    def met(self) -> bool:
        return len(self.approved) >= self.quorum

    def describe(self) -> str:
        """``1 of 2 approvals (alice)``."""
        names = f" ({', '.join(self.approved)})" if self.approved else ""
        return f"{len(self.approved)} of {self.quorum} approval{'s' if self.quorum != 1 else ''}{names}"


@dataclass(frozen=True, slots=True)
class Requirement:
    """What one escalated entry needs, fixed when it escalated (kept on the entry as JSON)."""

    rule: str
    approvers: Approvers
    quorum: int
    expires_at: float | None
    people: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    requested_by: Identity | None = None
    """The human who asked for this run (``cairn request``); ``None`` for an alert."""

    def describe(self) -> str:
        """``needs 2 approvers from group sre``."""
        who = self.approvers.describe()
        if self.quorum == 1:
            return (
                f"needs 1 approver: {who}" if self.approvers.anyone_local else f"needs 1 approver from {who}"
            )
        return f"needs {self.quorum} approvers from {who}"

    def person_of(self, identity: Identity) -> Identity:
        """``identity`` with the person the ``people:`` map says it is."""
        for person, accounts in self.people.items():
            if accounts.get(identity.kind) == identity.id:
                return identity.with_person(person)
        return identity

    def may_decide(self, identity: Identity) -> bool:
        """True when ``identity`` (with its person) is one of the approvers."""
        who = self.approvers
        if identity.person and identity.person in who.users:
            return True
        if identity.kind == "unix":
            return (
                who.anyone_local or identity.id in who.users or bool(set(identity.groups) & set(who.groups))
            )
        if identity.kind == "slack":
            return identity.id in who.slack_users or bool(set(identity.groups) & set(who.slack_usergroups))
        return False

    def progress(self, attempts: Sequence[Attempt]) -> Progress:
        approved: list[str] = []
        seen: set[str] = set()
        for attempt in attempts:
            counts = attempt.action is Action.APPROVE and attempt.outcome in (
                Outcome.COUNTED,
                Outcome.APPROVED,
            )
            if counts and attempt.who.key not in seen:
                seen.add(attempt.who.key)
                approved.append(attempt.who.person or attempt.who.short)
        return Progress(self.quorum, tuple(approved))

    def as_data(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "approvers": self.approvers.as_data(),
            "quorum": self.quorum,
            "expires_at": self.expires_at,
            "people": {k: dict(v) for k, v in self.people.items()},
            "requested_by": self.requested_by.as_data() if self.requested_by else None,
        }

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> Requirement:
        """From :meth:`as_data`; an entry escalated before approval policies gets the default rule."""
        if not data:
            return Requirement("default", DEFAULT_RULE.approvers, 1, None)
        return cls(
            rule=str(data.get("rule", "default")),
            approvers=Approvers.of(data.get("approvers") or {}),
            quorum=int(data.get("quorum", 1)),
            expires_at=data.get("expires_at"),
            people={str(k): dict(v) for k, v in (data.get("people") or {}).items()},
            requested_by=identity_of(data.get("requested_by")),
        )


@dataclass(frozen=True, slots=True)
class Judgement:
    """What one attempt comes to, and the words every front end shows."""

    outcome: Outcome
    message: str
    progress: Progress


def judge(
    requirement: Requirement,
    who: Identity,
    action: Action,
    earlier: Sequence[Attempt],
    now: float,
) -> Judgement:
    """Judge ``who``'s ``action`` on an escalated entry, given the attempts made before it.

    ``who`` must already carry its person (:meth:`Requirement.person_of`)."""
    progress = requirement.progress(earlier)
    needs = requirement.describe()
    so_far = f"{len(progress.approved)} of {progress.quorum} so far" + (
        f" ({', '.join(progress.approved)})" if progress.approved else ""
    )
    if requirement.expires_at is not None and now >= requirement.expires_at:
        return Judgement(
            Outcome.REFUSED,
            "the approval request expired: nothing will run; the alert's next firing asks again",
            progress,
        )
    asker = requirement.requested_by
    asked = asker is not None and requirement.person_of(asker).key == who.key
    if action is Action.DECLINE:
        if asked or requirement.may_decide(who):  # the one who asked may withdraw the request
            return Judgement(Outcome.DECLINED, "declined: nothing is changed", progress)
        return Judgement(Outcome.REFUSED, f"{who.short} may not decide this: {needs}", progress)
    if asked:
        return Judgement(
            Outcome.REFUSED,
            f"{who.short} asked for this run and cannot approve it: {needs}; {so_far}",
            progress,
        )
    if not requirement.may_decide(who):
        hint = (
            "; a Slack user approves only when named in approvals (slack_users, slack_usergroups or people)"
            if who.kind == "slack"
            else ""
        )
        return Judgement(Outcome.REFUSED, f"{who.short} may not approve this: {needs}{hint}", progress)
    if who.key in {
        a.who.key for a in earlier if a.action is Action.APPROVE and a.outcome is not Outcome.REFUSED
    }:
        named = who.person or who.short
        return Judgement(Outcome.REFUSED, f"{needs}; {named} already approved; {so_far}", progress)
    after = Progress(progress.quorum, (*progress.approved, who.person or who.short))
    if after.met:
        return Judgement(
            Outcome.APPROVED,
            f"approved ({after.describe()}): the next run checks again, then remediates",
            after,
        )
    return Judgement(Outcome.COUNTED, f"approval counted: {after.describe()}; {needs}", after)
