"""The approval policy's judgement: who may approve, quorum, no self-approval, expiry (no store)."""

from __future__ import annotations

import pytest

from engine.core.approval_policy import (
    Action,
    ApprovalPolicy,
    Attempt,
    Outcome,
    Requirement,
    judge,
)
from engine.core.identity import Identity, Via

NOW = 1_800_000_000.0

POLICY = ApprovalPolicy.of(
    {
        "expires": "4h",
        "people": {"alice": {"unix": "alice", "slack": "U0ALICE"}},
        "rules": [
            {
                "name": "critical",
                "severity": ["critical"],
                "approvers": {"groups": ["sre"], "slack_usergroups": ["S0SRE"]},
                "quorum": 2,
                "expires": "1h",
            },
            {"name": "kube", "tags": ["kubernetes"], "approvers": {"users": ["alice", "dave"]}},
            {"name": "node", "runbooks": ["node-*"], "approvers": {"slack_users": ["U0BOB"]}},
        ],
    }
)


def unix(name: str, *groups: str) -> Identity:
    return Identity("unix", name, name, Via.CLI, groups=groups, uid=1000, machine="ops-1")


def slack(user_id: str, name: str, *groups: str) -> Identity:
    return Identity("slack", user_id, name, Via.SLACK, groups=groups)


def critical(requested_by: Identity | None = None) -> Requirement:
    return POLICY.requirement(
        "zombie-node", ["kubernetes"], "critical", escalated_at=NOW, requested_by=requested_by
    )


def attempts(requirement: Requirement, *tries: tuple[Identity, Action]) -> list[Attempt]:
    """The attempts as decide journals them: each judged after the ones before it."""
    made: list[Attempt] = []
    for number, (given, action) in enumerate(tries, start=1):
        who = requirement.person_of(given)
        verdict = judge(requirement, who, action, made, NOW + number)
        made.append(Attempt(number, 1, NOW + number, action, verdict.outcome, who))
    return made


def test_the_first_matching_rule_decides_and_no_match_is_the_default() -> None:
    assert POLICY.rule_for("zombie-node", ["kubernetes"], "critical").name == "critical"
    assert POLICY.rule_for("zombie-node", ["kubernetes"], "warning").name == "kube"
    assert POLICY.rule_for("node-disk", [], "warning").name == "node"
    default = POLICY.rule_for("branch-cleanup", [], "info")
    assert (default.name, default.quorum, default.expires) == ("default", 1, 4 * 3600)
    assert critical().expires_at == NOW + 3600
    assert critical().describe() == "needs 2 approvers from group sre or Slack group S0SRE"


def test_a_quorum_of_two_counts_people_once_each() -> None:
    requirement = critical()
    alice, bob = unix("alice", "sre"), unix("bob", "sre")
    made = attempts(requirement, (alice, Action.APPROVE))
    assert made[-1].outcome is Outcome.COUNTED
    again = judge(requirement, requirement.person_of(alice), Action.APPROVE, made, NOW + 5)
    assert again.outcome is Outcome.REFUSED
    assert again.message == (
        "needs 2 approvers from group sre or Slack group S0SRE; alice already approved; 1 of 2 so far (alice)"
    )
    done = judge(requirement, bob, Action.APPROVE, made, NOW + 6)
    assert done.outcome is Outcome.APPROVED
    assert done.progress.describe() == "2 of 2 approvals (alice, bob)"


def test_one_person_in_the_cli_and_in_slack_counts_once() -> None:
    requirement = critical()
    made = attempts(requirement, (unix("alice", "sre"), Action.APPROVE))
    as_slack = requirement.person_of(slack("U0ALICE", "alice.s", "S0SRE"))
    verdict = judge(requirement, as_slack, Action.APPROVE, made, NOW + 5)
    assert verdict.outcome is Outcome.REFUSED and "alice already approved" in verdict.message


def test_nobody_approves_what_they_asked_for_from_any_front_end() -> None:
    requirement = critical(requested_by=unix("alice", "sre"))
    for who in (unix("alice", "sre"), slack("U0ALICE", "alice", "S0SRE")):
        verdict = judge(requirement, requirement.person_of(who), Action.APPROVE, [], NOW + 1)
        assert verdict.outcome is Outcome.REFUSED
        assert verdict.message.startswith(f"{who.short} asked for this run and cannot approve it: needs 2")
    withdrawn = judge(requirement, requirement.person_of(unix("alice", "sre")), Action.DECLINE, [], NOW + 1)
    assert withdrawn.outcome is Outcome.DECLINED, "whoever asked may withdraw the request"


@pytest.mark.parametrize(
    ("who", "allowed"),
    [
        (unix("carol"), False),
        (unix("carol", "sre"), True),
        (slack("U0CAROL", "carol"), False),
        (slack("U0CAROL", "carol", "S0SRE"), True),
    ],
)
def test_only_the_named_approvers_may_approve(who: Identity, allowed: bool) -> None:
    verdict = judge(critical(), who, Action.APPROVE, [], NOW + 1)
    assert (verdict.outcome is Outcome.COUNTED) == allowed, verdict.message
    if not allowed:
        assert verdict.message.startswith(
            f"{who.short} may not approve this: needs 2 approvers from group sre"
        )
        declined = judge(critical(), who, Action.DECLINE, [], NOW + 1)
        assert declined.outcome is Outcome.REFUSED, "who may not approve may not decline either"


def test_people_named_in_users_approve_from_slack_too() -> None:
    requirement = POLICY.requirement("zombie-node", ["kubernetes"], "warning", escalated_at=NOW)
    as_slack = requirement.person_of(slack("U0ALICE", "alice"))
    assert judge(requirement, as_slack, Action.APPROVE, [], NOW + 1).outcome is Outcome.APPROVED
    stranger = judge(requirement, slack("U0EVE", "eve"), Action.APPROVE, [], NOW + 1)
    assert stranger.outcome is Outcome.REFUSED
    assert "a Slack user approves only when named in approvals" in stranger.message


def test_the_default_rule_takes_any_local_account_but_no_unnamed_slack_user() -> None:
    requirement = POLICY.requirement("branch-cleanup", [], "info", escalated_at=NOW)
    assert requirement.describe() == "needs 1 approver: any local account that can write the store"
    assert judge(requirement, unix("zoe"), Action.APPROVE, [], NOW).outcome is Outcome.APPROVED
    assert judge(requirement, slack("U0ZOE", "zoe"), Action.APPROVE, [], NOW).outcome is Outcome.REFUSED


def test_an_expired_request_refuses_every_decision() -> None:
    requirement = critical()
    assert requirement.expires_at is not None
    for action in Action:
        verdict = judge(requirement, unix("bob", "sre"), action, [], requirement.expires_at)
        assert verdict.outcome is Outcome.REFUSED
        assert verdict.message.startswith("the approval request expired")


def test_a_requirement_survives_the_journal() -> None:
    requirement = critical(requested_by=unix("alice", "sre"))
    assert Requirement.of(requirement.as_data()) == requirement
    legacy = Requirement.of(None)
    assert (legacy.rule, legacy.quorum, legacy.expires_at) == ("default", 1, None)
