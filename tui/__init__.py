"""Cairn's Textual TUI (the on-call front end). Not built yet: see issue 5.

The TUI will be a thin front end over the same runner, journal and inventory
as the CLI; nothing in ``engine`` may import it.
"""
