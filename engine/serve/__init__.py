"""``cairn serve``: Prometheus Alertmanager webhooks in, runbook runs out (see :mod:`engine.serve.server`).

Importing this package imports nothing else: ``cairn --help`` reads the defaults of
:mod:`engine.serve.settings`, which must stay cheap.
"""
