"""The ``cairn`` commands: one module per command or closely related group.

Each module has ``register(commands)`` (its sub-parsers, see :mod:`engine.cli.options`) and
its handlers; :mod:`engine.cli.parser` lists the modules. Module level stays cheap to import
(``cairn --help`` imports them all): heavy modules are imported inside the handlers.
"""
