"""The store: where the journal, the alert queue and the remediation ledger live, in one database.

SQLite is the embedded default (a file; no server needed for the CLI, the TUI and one
``cairn serve``); PostgreSQL is chosen with ``--journal postgresql://…`` (or ``CAIRN_JOURNAL``)
and lets several ``cairn serve`` share the work.

* :mod:`.location` — what ``--journal`` names: a file or a PostgreSQL URL, shown without its password;
* :mod:`.database` — one connection, to write or only to read, its transactions, and every fault
  of the disk or the server said as one error;
* :mod:`.migrate` — the one schema, as Alembic migrations (``migrations/versions``), applied by
  ``cairn journal migrate`` (and by a writer of a SQLite file or an empty PostgreSQL database);
* :mod:`.leases` — who holds which work, renewed by heartbeat, and the fence a lapsed holder meets.

Runtime statements go straight to the driver (``sqlite3``, ``psycopg``): SQLAlchemy and Alembic
are imported only to create or migrate a schema, so ``cairn history`` does not pay for them.
"""
