"""``cairn inventory``: the hosts an inventory resolves to, and how each is reached."""

from __future__ import annotations

import argparse

from engine.cli.common import EXIT_OK, emit_json, execution_options
from engine.cli.options import Commands


def register(commands: Commands) -> None:
    inventory = commands.add(
        "inventory",
        cmd_inventory,
        "list the hosts an inventory resolves to and how each will be reached",
        [commands.as_json, commands.reach],
    )
    inventory.add_argument(
        "-i",
        "--inventory",
        action="append",
        required=True,
        metavar="INV",
        help="Ansible inventory file or folder (repeatable)",
    )
    inventory.add_argument(
        "pattern", nargs="?", default="all", metavar="PATTERN", help="host pattern (default: all)"
    )
    inventory.add_argument(
        "-l", "--limit", metavar="PATTERN", help="further limit the hosts (Ansible pattern)"
    )


def cmd_inventory(args: argparse.Namespace) -> int:
    from engine.core.executors import describe_reach  # noqa: PLC0415
    from engine.core.inventory import load_inventory  # noqa: PLC0415
    from engine.core.records import inventory_text  # noqa: PLC0415

    hosts = load_inventory(args.inventory).hosts(args.pattern, args.limit)
    options = execution_options(args)
    rows = [
        {
            "host": h.name,
            "connection": h.connection,
            "reached_by": describe_reach(h, options),
            "groups": list(h.vars.get("group_names", [])),
            "vars": h.vars,
        }
        for h in hosts
    ]
    if args.json:
        emit_json({"hosts": rows})
    else:
        print(inventory_text(rows))
    return EXIT_OK
