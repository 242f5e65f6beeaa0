"""Alembic's environment for Cairn's store: migrations run on the connection :mod:`engine.core.store.migrate` gives.

No ``alembic.ini`` and no URL here: ``cairn journal migrate`` (or a writer creating a store) opens
the connection and passes it in ``config.attributes["connection"]``, inside its transaction.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
