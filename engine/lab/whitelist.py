"""An nginx IP allow list that no longer matches its callers: the ``ip-whitelist-breakage`` lab.

A real nginx (:mod:`engine.lab.nginx`) on ``127.0.0.1:PORT`` guards a provider
API (:mod:`engine.lab.whitelist_provider`) with ``allow`` entries kept in an
included file, then ``deny all``. The callers are loopback addresses
``127.A.B.x`` derived from the port, so two labs side by side never share one;
``curl --interface ADDRESS`` sends a request "from" a caller.

What it holds (and what the runbook should conclude):

* ``checkout`` (``.10``) and ``reports`` (``.12``): listed, answered 200.
* ``billing`` was rescheduled from ``.11`` to ``.21``: its new address is not
  listed, so it gets 403 (a *missing* entry), and ``.11`` is still listed (a
  *stale* entry). The access log shows a request let in from ``.11`` after
  billing moved: whoever got the recycled address inherited billing's access.
* ``legacy-export`` (``.13``) was decommissioned; its entry stayed (stale, unused).
* ``callers.txt`` is the "service registry" export: caller name and current address.

The healthy variant lists exactly the three current callers.
"""

from __future__ import annotations

import http.client
from pathlib import Path

from engine.lab.base import LOOPBACK, LabContext, LabError, LabResult, free_port, lab_env
from engine.lab.nginx import Nginx

RUNBOOK = "ip-whitelist-breakage"
SUMMARY = "nginx allow list with a missing entry (a rescheduled caller gets 403) and stale entries"
PROGRAMS = ("nginx",)

PROVIDER = "ledger-api"


def caller_addresses(port: int) -> dict[str, str]:
    """The lab's addresses, by role, in ``127.A.B.0/24`` where ``A.B`` is the port (unique while the lab runs)."""
    base = f"127.{(port >> 8) & 0xFF}.{port & 0xFF}"
    return {
        "checkout": f"{base}.10",
        "billing_old": f"{base}.11",
        "reports": f"{base}.12",
        "legacy_export": f"{base}.13",
        "billing": f"{base}.21",
    }


def allow_list_text(entries: list[tuple[str, str]]) -> str:
    lines = [
        f"# Callers allowed to reach {PROVIDER}; included in its location before `deny all;`.",
        "# One `allow ADDRESS;` per caller, commented with the caller's name.",
    ]
    lines += [f"allow {address};  # {name}" for name, address in entries]
    return "\n".join(lines) + "\n"


def callers_text(callers: list[tuple[str, str]]) -> str:
    lines = [
        f"# Callers of {PROVIDER} and their current addresses (NAME ADDRESS), as the service registry says.",
        "# In a cluster: kubectl get pods -l calls=ledger-api --no-headers \\",
        "#   -o custom-columns=NAME:.metadata.labels.app,IP:.status.podIP",
    ]
    lines += [f"{name} {address}" for name, address in callers]
    return "\n".join(lines) + "\n"


def server_block(port: int, backend: int, allow_list: Path) -> str:
    # The allow list guards proxy_pass: access checks run after `return`, so they
    # would not guard a `return` (real-components.md).
    return f"""    server {{
        listen {LOOPBACK}:{port};
        location / {{
            include {allow_list};
            deny all;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_pass http://{LOOPBACK}:{backend};
        }}
    }}"""


def request(port: int, source: str, path: str) -> int:
    """One GET to the lab's nginx from ``source``; returns the HTTP status."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def up(ctx: LabContext) -> LabResult:
    """Start the provider and its nginx, write the allow list and the registry, and replay some history."""
    port, backend = free_port(), free_port()
    while backend == port:
        backend = free_port()
    addr = caller_addresses(port)
    current = [("checkout", addr["checkout"]), ("billing", addr["billing"]), ("reports", addr["reports"])]
    if ctx.healthy:
        listed = list(current)
    else:
        listed = [
            ("checkout", addr["checkout"]),
            ("billing", addr["billing_old"]),
            ("reports", addr["reports"]),
            ("legacy-export", addr["legacy_export"]),
        ]

    nginx = Nginx(ctx, "nginx")
    allow_list = nginx.root / "snippets" / f"{PROVIDER}-allow.conf"
    allow_list.parent.mkdir(parents=True, exist_ok=True)
    allow_list.write_text(allow_list_text(listed), encoding="utf-8")
    callers_file = ctx.dir / "callers.txt"
    callers_file.write_text(callers_text(current), encoding="utf-8")

    ctx.spawn(
        [ctx.python, "-m", "engine.lab.whitelist_provider", "--port", str(backend)],
        name="provider",
        env=lab_env(),
    )
    ctx.wait_for_port(backend, process="provider")
    nginx.write(server_block(port, backend, allow_list))
    nginx.start(port)

    # History in the access log, as diagnose will read it.
    history: list[tuple[str, str, int]] = [
        (addr["checkout"], "/ledger/balance", 200),
        (addr["reports"], "/ledger/report", 200),
    ]
    if ctx.healthy:
        history.append((addr["billing"], "/ledger/invoices", 200))
    else:
        history += [
            (addr["billing_old"], "/ledger/invoices", 200),  # billing, before it was rescheduled
            (addr["billing"], "/ledger/invoices", 403),  # billing, after: its new address is not listed
            (addr["billing_old"], "/ledger/export-all", 200),  # someone else, on billing's recycled address
        ]
    for source, path, expected in history:
        try:
            status = request(port, source, path)
        except OSError as exc:
            raise LabError(f"lab {ctx.name}: a request from {source} to nginx failed: {exc}") from exc
        if status != expected:
            raise LabError(f"lab {ctx.name}: GET {path} from {source} got HTTP {status}, expected {expected}")

    url = f"http://{LOOPBACK}:{port}/"
    if ctx.healthy:
        notes = [f"nginx on {url} lists exactly its 3 callers (callers.txt): detect finds nothing"]
    else:
        notes = [
            f"nginx on {url} guards {PROVIDER}; billing moved from {addr['billing_old']} to {addr['billing']} "
            f"and gets 403 (try: curl --interface {addr['billing']} {url})",
            f"stale entries: {addr['billing_old']} (billing's old address, used by someone else since) "
            f"and {addr['legacy_export']} (legacy-export, decommissioned)",
            f"to practise a failed remediation and its rollback, add a caller nginx cannot accept "
            f"to {callers_file}: `echo typo 10.0.0.300 >> {callers_file}`",
        ]
    return LabResult(
        group="provider_gateways",
        hosts={"ledger-gw": {}},
        inputs={
            "callers_file": str(callers_file),
            "allow_list": str(allow_list),
            "provider_url": url,
            "nginx_bin": nginx.binary,
            "nginx_conf": str(nginx.conf),
            "nginx_error_log": str(nginx.error_log),
            "access_log": str(nginx.access_log),
        },
        notes=notes,
    )
