"""Who decides: the authenticated identity behind every approval, decline and confirmation.

An identity is never taken from what a person says about themselves (``$USER``, ``--by``):

* at a terminal (``cairn approve``, the TUI, ``cairn run``) it is the operating-system account
  the process runs as, looked up from its **uid**, with that account's Unix groups — plus, when
  the store is PostgreSQL, the **database role** the server authenticated (``current_user``,
  read from the server, not from the URL);
* in Slack it is the user Slack names in an interaction whose **signature was verified**
  (:mod:`engine.serve.slack`), with the Slack user groups that user is in.

:attr:`Identity.person` joins the two: the approval policy's ``people:`` map says which Unix
account and which Slack user are the same person, so a quorum counts people, not accounts, and
nobody approves their own request from another front end.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any


class Via(Enum):
    """The front end a decision came through."""

    CLI = "cli"
    TUI = "tui"
    SLACK = "slack"


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated someone: a Unix account on a machine, or a Slack user in a workspace."""

    kind: str
    """``unix`` or ``slack``."""
    id: str
    """The account's name (``unix``: from the uid), or the Slack user id (``U…``)."""
    name: str
    """How people call it: the Unix account, or the Slack user's name."""
    via: Via
    groups: tuple[str, ...] = ()
    """Unix groups of the account, or Slack user group ids (``S…``) and handles the user is in."""
    uid: int | None = None
    machine: str = ""
    """Where a Unix identity was read (the host name)."""
    role: str = ""
    """The PostgreSQL role the store's server authenticated (``""``: a SQLite store)."""
    person: str = ""
    """The person this account is, per the policy's ``people:`` map (``""``: not mapped)."""

    @property
    def key(self) -> str:
        """Who counts once in a quorum: the mapped person, else the account (``unix:alice``)."""
        return f"person:{self.person}" if self.person else f"{self.kind}:{self.id}"

    @property
    def label(self) -> str:
        """How the journal, ``cairn queue`` and Slack name the decider: ``alice (unix uid 1000 on
        web-1, db role cairn_alice, via cli)`` or ``@alice (slack U0123, via slack)``."""
        if self.kind == "slack":
            said = [f"slack {self.id}"]
        else:
            said = [f"unix uid {self.uid} on {self.machine}" if self.uid is not None else "unix"]
        if self.role:
            said.append(f"db role {self.role}")
        said.append(f"via {self.via.value}")
        shown = f"@{self.name}" if self.kind == "slack" else self.name
        return f"{shown} ({', '.join(said)})"

    @property
    def short(self) -> str:
        """The name alone, for lists: ``alice``, ``@alice``."""
        return f"@{self.name}" if self.kind == "slack" else self.name

    def as_data(self) -> dict[str, Any]:
        """The identity as the journal keeps it (``cairn history --json`` shows it)."""
        return {
            "kind": self.kind,
            "id": self.id,
            "name": self.name,
            "via": self.via.value,
            "groups": list(self.groups),
            "uid": self.uid,
            "machine": self.machine,
            "role": self.role,
            "person": self.person,
        }

    def with_role(self, role: str) -> Identity:
        return replace(self, role=role)

    def with_person(self, person: str) -> Identity:
        return replace(self, person=person)


def local_identity(via: Via) -> Identity:
    """The operating-system account this process runs as, from its uid (never ``$USER``)."""
    uid = os.getuid()
    try:
        account = pwd.getpwuid(uid)
    except KeyError:  # a uid with no passwd entry (a container's): still this uid, nobody else
        return Identity("unix", f"uid{uid}", f"uid{uid}", via, uid=uid, machine=socket.gethostname())
    return Identity(
        "unix",
        account.pw_name,
        account.pw_name,
        via,
        groups=_groups(account.pw_name, account.pw_gid),
        uid=uid,
        machine=socket.gethostname(),
    )


def _groups(user: str, gid: int) -> tuple[str, ...]:
    names = []
    for number in sorted(set(os.getgrouplist(user, gid))):
        try:
            names.append(grp.getgrgid(number).gr_name)
        except KeyError:
            names.append(str(number))
    return tuple(names)


def slack_identity(user_id: str, name: str, groups: tuple[str, ...] = ()) -> Identity:
    """A Slack user, as named by an interaction payload whose signature was verified."""
    return Identity("slack", user_id, name or user_id, Via.SLACK, groups=groups)


def identity_of(data: Mapping[str, Any] | None) -> Identity | None:
    """An identity as :meth:`Identity.as_data` kept it (``None`` for none)."""
    if not data:
        return None
    return Identity(
        str(data.get("kind", "")),
        str(data.get("id", "")),
        str(data.get("name", "")),
        Via(str(data.get("via", "cli"))),
        groups=tuple(str(g) for g in data.get("groups") or ()),
        uid=data.get("uid"),
        machine=str(data.get("machine", "")),
        role=str(data.get("role", "")),
        person=str(data.get("person", "")),
    )
