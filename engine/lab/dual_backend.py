"""One platform's copy of the "shop" service for the ``dual-platform-deploy`` lab (standard library only).

``python -m engine.lab.dual_backend --port P --platform k8s --version-file F [--fail-file F]
[--fixed-in 2.3.1] [--delay 0.004]`` answers on 127.0.0.1:P:

* ``GET /version`` — ``{"service": "shop", "version": V, "platform": P}``, ``V`` read from
  ``--version-file`` on every request, so the lab's deploy command (which rewrites that file)
  takes effect at once;
* ``GET /checkout`` — 500 while ``V`` is older than ``--fixed-in`` (the bug the hot-fix
  release fixed), else 200;
* anything else — 200.

Every answer carries ``X-Platform: P`` and ``X-Version: V``, so a client can tell which
platform served it. While ``--fail-file`` exists every path but ``/version`` answers 503
(a broken release: the deploy still reports its version, the traffic fails). ``--delay``
adds that many seconds to each answer: the extra network hop an Ingress stands for.
"""

from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

from engine.lab.base import LOOPBACK


def version_key(version: str) -> tuple[int, ...]:
    """``"2.3.1"`` → ``(2, 3, 1)``; a part that is not a number counts as 0."""
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


class ShopHandler(BaseHTTPRequestHandler):
    """The service's few endpoints; the settings live on the class (one server per process)."""

    platform: ClassVar[str] = "old"
    version_file: ClassVar[Path] = Path("version")
    fail_file: ClassVar[Path | None] = None
    fixed_in: ClassVar[str] = ""
    delay: ClassVar[float] = 0.0
    server_version = "shop"

    def do_GET(self) -> None:  # http.server calls this name
        version = self.version_file.read_text(encoding="utf-8").strip()
        if self.delay:
            time.sleep(self.delay)
        path = self.path.split("?", 1)[0]
        if path == "/version":
            body = json.dumps({"service": "shop", "version": version, "platform": self.platform}) + "\n"
            self._answer(200, version, body, "application/json")
        elif self.fail_file is not None and self.fail_file.exists():
            self._answer(503, version, f"shop {version} on {self.platform}: release broken\n")
        elif path == "/checkout" and self.fixed_in and version_key(version) < version_key(self.fixed_in):
            self._answer(
                500,
                version,
                f"shop {version} on {self.platform}: checkout failed (fixed in {self.fixed_in})\n",
            )
        else:
            self._answer(200, version, f"shop {version} on {self.platform}\n")

    def _answer(self, status: int, version: str, body: str, content_type: str = "text/plain") -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Platform", self.platform)
        self.send_header("X-Version", version)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # http.server's signature
        """Quiet: nginx's access log is the record the runbook reads."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--platform", required=True)
    parser.add_argument("--version-file", type=Path, required=True)
    parser.add_argument("--fail-file", type=Path)
    parser.add_argument("--fixed-in", default="")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    ShopHandler.platform = args.platform
    ShopHandler.version_file = args.version_file
    ShopHandler.fail_file = args.fail_file
    ShopHandler.fixed_in = args.fixed_in
    ShopHandler.delay = args.delay
    with ThreadingHTTPServer((LOOPBACK, args.port), ShopHandler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
