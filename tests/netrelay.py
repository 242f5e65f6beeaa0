"""A TCP <-> Unix-socket relay: how the bastion tests carry one port across network namespaces.

A network namespace has its own loopback, so a port there cannot be reached from outside it; a
Unix socket's path, on the other hand, is a file, and every namespace sees the same files. Two
relays therefore bridge a port: one inside the namespace accepts on a socket path and connects
to the port there, one outside listens on an address and port and connects to that path.

    python tests/netrelay.py tcp-to-unix ADDRESS PORT SOCKET   # listen on TCP, forward to SOCKET
    python tests/netrelay.py unix-to-tcp SOCKET ADDRESS PORT   # listen on SOCKET, forward to TCP

It prints ``ready`` once it listens, and runs until killed. A connection it cannot forward is
closed at once, so the far end sees the refusal as an immediate close.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable

Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()  # either side ending ends the pair: SSH has no use for half-open streams


def _relay(open_far: Opener) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            far_reader, far_writer = await open_far()
        except OSError:
            writer.close()
            return
        await asyncio.gather(_copy(reader, far_writer), _copy(far_reader, writer))

    return serve


async def _main(argv: list[str]) -> int:
    match argv:
        case ["tcp-to-unix", address, port, path]:
            server = await asyncio.start_server(
                _relay(lambda: asyncio.open_unix_connection(path)), address, int(port)
            )
        case ["unix-to-tcp", path, address, port]:
            server = await asyncio.start_unix_server(
                _relay(lambda: asyncio.open_connection(address, int(port))), path
            )
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    print("ready", flush=True)
    async with server:
        await server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1:])))
