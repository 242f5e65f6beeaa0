"""Cairn's Textual TUI: the on-call front end (``cairn tui``, or ``cairn`` alone in a terminal).

A thin front end over the same runner, journal, inventory and labs as the CLI:
``tui.app.make_app(config)`` builds it. Nothing in ``engine`` may import it.
Logs go nowhere unless a front end configures a handler: never to the terminal
behind the app's back.
"""

from __future__ import annotations

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
