"""``cairn``: the command line. Thin: parse arguments, call the engine, print.

Exit codes (:mod:`engine.cli.common`): 0 success / healthy / remediated; 1 problems found
(``validate``) or the pitfall is present (``run``); 2 usage or input errors, and runs that
failed; 130 interrupted. The parser is :mod:`engine.cli.parser`, the commands
:mod:`engine.cli.commands`; heavy modules are imported inside the handlers so that
``cairn --help`` starts fast.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from engine.cli.common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, usage
from engine.cli.parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cairn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None and sys.stdin.isatty() and sys.stdout.isatty():
        args = parser.parse_args(["tui"])  # `cairn` alone at a terminal opens the TUI
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "verbose", 0) > 1:
        import logging  # noqa: PLC0415

        logging.basicConfig(
            level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
        )
    from engine.core.errors import CairnError, RunbookInvalid  # noqa: PLC0415

    try:
        code: int = args.handler(args)
    except RunbookInvalid as exc:
        print(f"cairn: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CairnError as exc:
        return usage(str(exc))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `cairn history | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:  # a bug in Cairn: say so plainly, keep the traceback for -vv
        import logging  # noqa: PLC0415

        logging.getLogger("engine.cli").debug("internal error", exc_info=True)
        print(
            f"cairn: internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in Cairn, not in your input; rerun with -vv for the traceback and report it.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return code
