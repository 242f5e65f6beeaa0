"""A screen whose footer lists its own keys in full, then as many of the app's keys as fit whole.

Textual's footer lays the keys out in one row and cuts what does not fit: at 80
columns the run screen's own keys pushed F2/F3/F6 off the edge and cut "F6 Alerts"
to "f6 Al". Here a screen's own keys are always listed; the app's keys (F2, F3,
F6, F7, Quit) follow while they fit, the least needed left out first, never one
cut in half. Keys left out still work (the command palette lists their commands).
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from rich.cells import cell_len
from textual.binding import ActiveBinding
from textual.screen import Screen

ResultType = TypeVar("ResultType")

LEFT_OUT_FIRST = ("ctrl+q", "f6", "f3", "f2", "f7")
"""The app's keys, the first left out of a footer too narrow for all of them (a run going on behind: F7, last)."""


def key_width(text: str, description: str) -> int:
    """Columns a key takes in a compact footer: ``f2 Runbooks`` and the space after it."""
    return cell_len(text) + (1 + cell_len(description) if description else 0) + 1


class FittedFooterScreen(Screen[ResultType]):
    """A screen with a compact footer (``Footer(compact=True)``) that never cuts a key in half."""

    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        """The bindings as Textual finds them, the app's that do not fit marked not to be shown.

        Only the footer (and the key panel) reads this; the keys themselves are dispatched from the
        binding chain, so a key left out here still works."""
        bindings = super().active_bindings
        app = self.app
        palette = bindings.get(app.COMMAND_PALETTE_BINDING)
        room = self.app.size.width - 1
        if palette is not None and app.ENABLE_COMMAND_PALETTE:
            room -= key_width(app.get_key_display(palette.binding), palette.binding.description) + 1
        listed: dict[str, tuple[str, int]] = {}
        """The first key of every action listed: the footer shows one key per action."""
        for key, active in bindings.items():
            binding = active.binding
            if binding.show and key != app.COMMAND_PALETTE_BINDING and binding.action not in listed:
                listed[binding.action] = (key, key_width(app.get_key_display(binding), binding.description))
        used = sum(width for _, width in listed.values())
        fitted = dict(bindings)
        # The key of the mode shown (F3 on the history) is the least needed of all.
        current = [k for k, a in bindings.items() if a.binding.action == f"show('{app.current_mode}')"]
        for key in [*current, *LEFT_OUT_FIRST]:
            if used <= room:
                break
            app_key = bindings.get(key)
            if app_key is None or app_key.node is not app:
                continue
            if listed.get(app_key.binding.action, ("",))[0] != key:  # not shown, or shown by its other key
                continue
            fitted[key] = app_key._replace(binding=dataclasses.replace(app_key.binding, show=False))
            used -= listed[app_key.binding.action][1]
        return fitted

    def on_resize(self) -> None:
        """Which keys fit depends on the width: the footer asks again."""
        self.refresh_bindings()
