"""Who decides, at a terminal: the account behind the process's uid, never what ``$USER`` says.

Each check runs Python as a real Unix account (:mod:`tests.people`) whose environment claims to be
someone else: every variable ``getpass.getuser()`` reads says ``root``.
"""

from __future__ import annotations

import json
import socket
import sys

import pytest

from tests.people import GROUP, Person

LIARS = {name: "root" for name in ("LOGNAME", "USER", "LNAME", "USERNAME")}
"""What a process's environment says about who it is: every variable ``getpass`` reads, lying."""

SHOW = """
import json
from engine.core.identity import Via, local_identity
from engine.core.spec import RunSpec, who
from tui.config import CairnConfig

me = local_identity(Via.TUI)
print(json.dumps({
    "identity": me.as_data(),
    "label": me.label,
    "who": who(),
    "tui_user": CairnConfig(runbook_dirs=()).user,
}))
"""


def shown_as(person: Person) -> dict[str, object]:
    done = person.run([sys.executable, "-c", SHOW], LIARS)
    assert done.returncode == 0, done.stderr
    shown: dict[str, object] = json.loads(done.stdout)
    return shown


@pytest.mark.parametrize("short", ["alice", "carol"])
def test_the_identity_is_the_uids_account_whatever_the_environment_says(
    people: dict[str, Person], short: str
) -> None:
    person = people[short]
    shown = shown_as(person)
    identity = shown["identity"]
    assert isinstance(identity, dict)
    assert (identity["kind"], identity["id"], identity["name"], identity["uid"]) == (
        "unix",
        person.account,
        person.account,
        person.uid,
    )
    assert identity["via"] == "tui" and identity["machine"] == socket.gethostname()
    assert (GROUP in identity["groups"]) is (short == "alice"), "the account's own Unix groups"
    assert shown["label"] == f"{person.account} (unix uid {person.uid} on {socket.gethostname()}, via tui)"
    assert "root" not in str(shown["label"])


def test_who_started_a_run_and_who_approves_in_the_tui_come_from_the_uid(people: dict[str, Person]) -> None:
    alice = people["alice"]
    shown = shown_as(alice)
    assert shown["who"] == f"{alice.account}@{socket.gethostname()}"
    assert shown["tui_user"] == alice.account
