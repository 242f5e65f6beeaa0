"""The provider behind the ``ip-whitelist-breakage`` lab's nginx: a small HTTP API that trusts its proxy.

``python -m engine.lab.whitelist_provider --port N`` serves ``GET /...`` on
127.0.0.1 with a JSON answer naming the caller's address (nginx passes it in
``X-Real-IP``). It does no access control of its own: like many internal
providers it relies on the IP allow list in front of it, which is the pitfall.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = "orders-api"


class ProviderHandler(BaseHTTPRequestHandler):
    """Answers every GET with 200 and who asked; logs nothing (nginx's access log is the record)."""

    server_version = NAME

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "provider": NAME,
                "path": self.path,
                "caller": self.headers.get("X-Real-IP", self.client_address[0]),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # the base class names it `format`
        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1")
    args = parser.parse_args()
    with ThreadingHTTPServer((args.address, args.port), ProviderHandler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
