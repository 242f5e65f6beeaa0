"""F2, F3 and F6 show their mode's own screen; a run still in progress goes on behind them, F7 brings it back.

A mode (the runbooks, the history, the alert queue) keeps its own stack of
screens, and switching to it used to show whatever was left on top: F2 pressed on
the Alerts screen brought back a finished run instead of the library. Now a mode
key closes what was opened over the mode's screen. A finished run is in the
history; a run still in progress is never closed (that would cancel it): its
screen is installed, so that popping it keeps it alive, and it goes on behind.
F7 (or the palette's "Back to the run") brings it back; the library says it is
there. One run at a time: its keys, approvals and knowledge are never ambiguous.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any

from textual.app import App, ScreenStackError
from textual.reactive import var
from textual.screen import ModalScreen, Screen

if TYPE_CHECKING:
    from tui.screens.run import RunScreen

RUN_BEHIND = "run-behind"
"""The name a run screen is installed under while the run goes on behind the other screens."""


class Navigation(App[None]):
    """The app's mode keys (``show``) and the run that goes on behind the screens (``back_to_run``)."""

    run_screen: var[RunScreen | None] = var(None, always_update=True)
    """The run in progress (one at a time), wherever it is: in front, under another screen, or behind
    them all (installed as ``RUN_BEHIND``); also a run that ended behind until it is seen. Set again
    whenever its state changes, for the library's banner."""

    def action_show(self, mode: str) -> None:
        """Show the mode's own screen (the library, the history, the alert queue) whatever was opened over it.

        A mode keeps its stack of screens, and F2 used to bring back whatever was left on top of it
        (a finished run, a run's details). Now the screens over the mode's own are closed: a finished
        run is in the history, a run's details are one Enter away. A run still in progress is not
        closed (that would cancel it): it goes on behind, and F7 brings it back."""
        if isinstance(self.screen, ModalScreen):  # a question or a confirmation: answered, never lost
            self.notify("answer the dialog first (Esc closes it)", severity="warning")
            return
        self.switch_mode(mode)
        run = self.run_screen
        for screen in reversed(self.screen_stack[1:]):
            if screen is run and not run.ended and not self.is_screen_installed(run):
                self.install_screen(run, RUN_BEHIND)  # an installed screen is kept when popped
            self.pop_screen()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """F7 only while there is a run to go back to, elsewhere than in front."""
        if action == "back_to_run":
            return self.run_screen is not None and self.run_screen not in self.screen_stack
        return True

    def action_back_to_run(self) -> None:
        """Bring the run in progress (or the run that ended behind) to the front, over the current screen."""
        run = self.run_screen
        if run is None:
            self.notify("no run in progress", severity="warning")
            return
        if isinstance(self.screen, ModalScreen):
            self.notify("answer the dialog first (Esc closes it)", severity="warning")
            return
        for mode in self.MODES:
            if run in self._stack_of(mode):  # left on top of another mode's screens: go there
                self.switch_mode(mode)
                return
        self.uninstall_screen(run)
        self.push_screen(run)

    def run_changed(self, screen: RunScreen) -> None:
        """A run screen started, ended, or waits for an answer behind the other screens."""
        previous = self.run_screen
        self.run_screen = screen
        if previous is not None and previous is not screen and self.is_screen_installed(previous):
            # A run that ended behind and was never seen again: the new one replaces it.
            self.uninstall_screen(previous)
            previous.remove()
        self._refresh_footer()

    def _stack_of(self, mode: str) -> list[Screen[Any]]:
        """A mode's screens, bottom first (none for a mode not shown yet)."""
        try:
            return self.get_screen_stack(mode)
        except KeyError:
            return []

    def run_closed(self, screen: RunScreen) -> None:
        """A run screen went away (its run ended and it was left, or the app is closing)."""
        if self.run_screen is screen:
            self.run_screen = None
            self._refresh_footer()

    def _refresh_footer(self) -> None:
        """F7 comes and goes with the run: the footer asks again (unless the app is closing: no screen left)."""
        with suppress(ScreenStackError):
            self.refresh_bindings()

    def run_in_progress(self) -> RunScreen | None:
        """The run still going (not the one that ended behind), if any: one run at a time."""
        run = self.run_screen
        return run if run is not None and not run.ended else None
