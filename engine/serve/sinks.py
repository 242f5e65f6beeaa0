"""Where notices go: the sinks ``cairn serve``'s dispatcher sends the outbox to (webhooks, Slack).

A sink is named (``webhook:pager``, ``slack``), says which notice kinds it wants, and sends one
delivery, raising :class:`DeliveryFailed` when it could not (``retry=False`` when trying again
cannot help: a 4xx that is not 408/429, a channel that does not exist). ``deliver`` runs on the
dispatcher's thread, never on a run's or an approver's: a slow or broken sink delays nothing but
its own notices.
"""

from __future__ import annotations

from typing import Protocol

from engine.core.notices import NoticeKind
from engine.core.outbox import Delivery


class DeliveryFailed(Exception):
    """A sink could not take a delivery; ``retry``: whether trying again later may help."""

    def __init__(self, why: str, *, retry: bool = True, after: float | None = None) -> None:
        super().__init__(why)
        self.retry = retry
        self.after = after
        """Seconds the sink asked to wait (Slack's and HTTP's ``Retry-After``), if it did."""


class Sink(Protocol):
    """One destination of notices."""

    @property
    def name(self) -> str:
        """Unique among the server's sinks; a delivery row names its sink by it."""
        ...

    def wants(self, kind: NoticeKind) -> bool:
        """Whether this sink is sent notices of ``kind``."""
        ...

    def deliver(self, delivery: Delivery) -> None:
        """Send one delivery (:class:`DeliveryFailed` if it was not taken)."""
        ...
