"""The ``dual-platform-deploy`` lab: an nginx splitting traffic between an old platform and a Kubernetes Ingress.

What runs (all on 127.0.0.1, random ports, files under the lab folder):

* ``old`` — the old platform's copy of the "shop" service (:mod:`engine.lab.dual_backend`);
* ``k8s`` — the Kubernetes copy, 4 ms slower per request (the extra network hop to a cluster);
* ``ingress`` — a real nginx standing for the Ingress controller: it routes ``Host: shop.example.test``
  to ``k8s`` and logs every request it passes, in its own access log (the double counting);
* ``front`` — the real nginx the runbook works on: ``conf.d/shop-upstream.conf`` holds the weighted
  upstream (old and the Ingress), its access log uses the ``upstream_split`` format the runbook reads.

The pitfall variant: old serves release 2.3.1 and k8s 2.3.0 (the hot-fix reached one platform only;
2.3.0 answers ``/checkout`` with 500), weights old 90 / k8s 10, target 50 %. ``--healthy``: both
2.3.1 at 50 / 50. Both send 120 requests through ``front`` so the access log has something to read.

``bin/deploy PLATFORM VERSION`` is the lab's release pipeline; ``touch k8s/FAIL`` breaks the k8s
copy (503 on everything but ``/version``) so that the runbook's health gate has to roll back.
"""

from __future__ import annotations

import shlex
import urllib.error
import urllib.request
from pathlib import Path

from engine.lab.base import LOOPBACK, LabContext, LabError, LabResult, executable, free_port, lab_env
from engine.lab.nginx import Nginx

RUNBOOK = "dual-platform-deploy"
SUMMARY = "nginx splitting traffic 90/10 between an old platform and a Kubernetes Ingress that runs an older release"
PROGRAMS = ("nginx",)

SERVICE_HOST = "shop.example.test"
FIXED_IN = "2.3.1"  # the hot-fix release: older versions fail /checkout
STALE = "2.3.0"
K8S_DELAY = 0.004  # seconds: the extra hop to the cluster, made visible in the latencies
TARGET = 50  # the lab's target share for Kubernetes, percent
WEIGHT_STEP = 20  # 10 → 30 → 50
WARMUP_PATHS = ("/", "/cart", "/checkout")  # period 3 against the 10-request weight cycle: k8s sees all three
WARMUP_REQUESTS = 120

# nginx's log_format body the runbook's diagnose and health gate parse (fields separated by "|",
# the request line last because it may contain anything).
LOG_FORMAT = (
    "$time_iso8601|$status|$request_time|$upstream_addr|$upstream_status|$upstream_response_time|$request"
)

DEPLOY_SCRIPT = """#!/bin/sh
# The dual-platform-deploy lab's release pipeline: deploy PLATFORM VERSION.
# It replaces the version file the platform's "shop" copy reads on every request.
set -eu
lab={lab}
case "${{1:-}}" in old|k8s) ;; *) echo "usage: $0 old|k8s VERSION" >&2; exit 2 ;; esac
case "${{2:-}}" in ''|*[!0-9A-Za-z.+~-]*) echo "$0: not a release version: '${{2:-}}'" >&2; exit 2 ;; esac
printf '%s\\n' "$2" > "$lab/$1/version.new"
mv "$lab/$1/version.new" "$lab/$1/version"
echo "deployed shop $2 to the $1 platform"
"""


def upstream_text(old: str, ingress: str, old_weight: int, k8s_weight: int) -> str:
    return (
        "# The shop service during its move to Kubernetes: the old platform and the Kubernetes Ingress.\n"
        "# cairn dual-platform-deploy rewrites the weights below.\n"
        "upstream shop {\n"
        f"    server {old} weight={old_weight};  # old platform\n"
        f"    server {ingress} weight={k8s_weight};  # Kubernetes Ingress\n"
        "}\n"
    )


def _start_backend(ctx: LabContext, platform: str, version: str, *, delay: float = 0.0) -> int:
    folder = ctx.dir / platform
    folder.mkdir()
    (folder / "version").write_text(version + "\n", encoding="utf-8")
    port = free_port()
    argv = [
        ctx.python,
        "-m",
        "engine.lab.dual_backend",
        "--port",
        str(port),
        "--platform",
        platform,
        "--version-file",
        str(folder / "version"),
        "--fail-file",
        str(folder / "FAIL"),
        "--fixed-in",
        FIXED_IN,
        "--delay",
        str(delay),
    ]
    ctx.spawn(argv, name=platform, env=lab_env())
    ctx.wait_for_port(port, process=platform)
    return port


def _warm_up(front_port: int) -> dict[int, int]:
    """Send some traffic through the front nginx; returns the count per status."""
    statuses: dict[int, int] = {}
    for i in range(WARMUP_REQUESTS):
        url = f"http://{LOOPBACK}:{front_port}{WARMUP_PATHS[i % len(WARMUP_PATHS)]}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                status = int(answer.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError as exc:
            raise LabError(f"lab {RUNBOOK}: the front nginx does not answer {url}: {exc}") from exc
        statuses[status] = statuses.get(status, 0) + 1
    return statuses


def up(ctx: LabContext) -> LabResult:
    """Start both platforms, the Ingress stand-in and the front nginx; write the deploy command."""
    k8s_release = FIXED_IN if ctx.healthy else STALE
    old_port = _start_backend(ctx, "old", FIXED_IN)
    k8s_port = _start_backend(ctx, "k8s", k8s_release, delay=K8S_DELAY)

    ingress = Nginx(ctx, "ingress")
    ingress_port = free_port()
    ingress.write(
        f"""    server {{
        listen {LOOPBACK}:{ingress_port} default_server;
        return 404;
    }}
    server {{
        listen {LOOPBACK}:{ingress_port};
        server_name {SERVICE_HOST};
        location / {{
            proxy_pass http://{LOOPBACK}:{k8s_port};
            proxy_set_header Host $host;
        }}
    }}"""
    )
    ingress.start(ingress_port)

    front = Nginx(ctx, "front")
    front_port = free_port()
    old_addr, ingress_addr = f"{LOOPBACK}:{old_port}", f"{LOOPBACK}:{ingress_port}"
    k8s_share = TARGET if ctx.healthy else 10
    upstream = front.conf_d / "shop-upstream.conf"
    upstream.write_text(upstream_text(old_addr, ingress_addr, 100 - k8s_share, k8s_share), encoding="utf-8")
    front.write(
        f"""    server {{
        listen {LOOPBACK}:{front_port};
        location / {{
            proxy_pass http://shop;
            proxy_set_header Host {SERVICE_HOST};
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
        }}
    }}""",
        log_format=LOG_FORMAT,
    )
    front.start(front_port)

    deploy = executable(ctx.dir / "bin" / "deploy", DEPLOY_SCRIPT.format(lab=shlex.quote(str(ctx.dir))))
    statuses = _warm_up(front_port)

    errors = sum(n for status, n in statuses.items() if status >= 500)
    notes = [
        f"front nginx on http://{LOOPBACK}:{front_port}/ splits shop between old {old_addr} "
        f"and the Kubernetes Ingress {ingress_addr} ({100 - k8s_share}/{k8s_share}, "
        f"upstream in {_rel(ctx, upstream)}); {WARMUP_REQUESTS} requests sent, {errors} answered 5xx",
        f"old serves {FIXED_IN}, k8s serves {k8s_release}"
        + (
            "" if ctx.healthy else f" (the hot-fix {FIXED_IN} reached one platform only: k8s fails /checkout)"
        ),
        "ingress/logs/access.log logs each k8s request a second time: the double counting in dashboards",
        f"bin/deploy PLATFORM VERSION is the lab's release pipeline; `touch {_rel(ctx, ctx.dir / 'k8s' / 'FAIL')}` "
        "breaks the k8s release (503) so the health gate rolls the weights back",
    ]
    inputs = {
        "nginx_bin": front.binary,
        "nginx_conf": str(front.conf),
        "nginx_error_log": str(front.error_log),
        "upstream_file": str(upstream),
        "access_log": str(front.access_log),
        "front_url": f"http://{LOOPBACK}:{front_port}/",
        "k8s_servers": ingress_addr,
        "version_host": SERVICE_HOST,
        "deploy_command": str(deploy),
        "k8s_weight": TARGET,
        "weight_step": WEIGHT_STEP,
        "probe_requests": 40,
        "split_requests": 100,
    }
    return LabResult(group="nginx_proxies", hosts={"proxy-lab": {}}, inputs=inputs, notes=notes)


def _rel(ctx: LabContext, path: Path) -> str:
    return str(path.relative_to(ctx.dir))
