"""Cairn's core: the runbook format, templates, the run engine, executors, the journal and the alert queue.

Every front end (the CLI, ``cairn serve``, the docs site, the TUI) and the lab harness build on
this package; it imports none of them (import-linter's layers contract in pyproject.toml).
"""
