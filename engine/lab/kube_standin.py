"""A Kubernetes API *stand-in* for the labs: recorded, real-shaped API responses served to the real kubectl.

No API server can be installed on this machine (no kube-apiserver, k3s, kind or envtest in
any reachable registry), so the Kubernetes-level checks of the ``node-notready-zombie-shim``
lab run the real ``kubectl`` against this small stdlib HTTP server instead. It is **not** an
API server: it answers ``GET`` only (no watch, no auth, no writes) for what kubectl needs to
read nodes and pods — ``/version`` (pinned), discovery (``/api``, ``/apis``, ``/api/v1``),
``/api/v1/nodes[/NAME]``, ``/api/v1/pods`` and ``/api/v1/namespaces/NS/pods[/NAME]`` with
``fieldSelector=spec.nodeName=X`` — as JSON, or as the ``Table`` kubectl asks for when it
prints columns (``kubectl get nodes``).

The objects in ``kube_objects/`` were recorded from a node in the state the runbook is about
(NotReady with "PLEG is not healthy", two pods stuck Terminating) at :data:`RECORDED_AT`; every
timestamp is replayed shifted by the time between then and the stand-in's start, and the PLEG
figure in the Ready message grows as time passes, as kubelet's would. The node's state follows
the lab's shim: while ``--shim-state`` says ``wedged`` the node is served as recorded; once it
says ``running`` (the shim reaps again) the node is Ready since that moment, its ``not-ready``
taints are gone and the pods that were Terminating are gone too (kubelet finished them).

Run: ``python -m engine.lab.kube_standin --shim-state FILE --port-file FILE`` (binds
127.0.0.1 on a free port and writes it to ``--port-file`` once it listens).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

OBJECTS = Path(__file__).with_name("kube_objects")
RECORDED_AT = "2019-11-08T08:30:00Z"
"""When the objects in ``kube_objects/`` were recorded; their timestamps are relative to it."""
PLEG_LAST_ACTIVE = "2019-11-08T08:17:50Z"
"""When the recorded node's PLEG last relisted (the Ready message counts from it)."""
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
_PLEG = re.compile(r"pleg was last seen active \S+ ago")
_LIST_KINDS = {"nodes": "NodeList", "pods": "PodList"}


def parse_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def format_time(when: float) -> str:
    return datetime.fromtimestamp(int(when), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def go_duration(seconds: float) -> str:
    """A duration as Go prints it (``12m10.181s``), as in kubelet's PLEG message."""
    hours, rest = divmod(max(seconds, 0.0), 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{int(hours)}h" if hours else ""
    text += f"{int(minutes)}m" if hours or minutes else ""
    return text + f"{secs:.3f}".rstrip("0").rstrip(".") + "s"


def human_age(seconds: float) -> str:
    """kubectl's AGE column (``duration.HumanDuration``), close enough for reading."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d" if d < 730 else f"{d // 365}y"


class Cluster:
    """The recorded objects, replayed as of now and as the shim's state dictates."""

    def __init__(self, shim_state: Path, started: float | None = None) -> None:
        self.shim_state = shim_state
        self.offset = (started or time.time()) - parse_time(RECORDED_AT)
        self.documents = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in OBJECTS.glob("*.json")}
        self.nodes: list[dict[str, Any]] = self._shifted(self.documents["nodes"]["items"])
        self.pods: list[dict[str, Any]] = self._shifted(self.documents["pods"]["items"])

    def _shifted(self, value: Any) -> Any:
        if isinstance(value, str) and _STAMP.match(value):
            return format_time(parse_time(value) + self.offset)
        if isinstance(value, dict):
            return {k: self._shifted(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._shifted(v) for v in value]
        return value

    def recovered_since(self) -> float | None:
        """When the shim started reaping again (None while it is wedged or not started)."""
        try:
            state = json.loads(self.shim_state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return float(state["since"]) if state.get("state") == "running" else None

    def node_list(self) -> list[dict[str, Any]]:
        now = time.time()
        recovered = self.recovered_since()
        nodes = copy.deepcopy(self.nodes)
        for node in nodes:
            for condition in node["status"]["conditions"]:
                condition["lastHeartbeatTime"] = format_time(now - 4)
                if condition["type"] != "Ready" or condition["status"] == "True":
                    continue
                if recovered is None:
                    pleg = now - (parse_time(PLEG_LAST_ACTIVE) + self.offset)
                    condition["message"] = _PLEG.sub(
                        f"pleg was last seen active {go_duration(pleg)} ago", condition["message"]
                    )
                else:
                    condition.update(
                        status="True",
                        reason="KubeletReady",
                        message="kubelet is posting ready status",
                        lastTransitionTime=format_time(recovered),
                    )
                    taints = [
                        t
                        for t in node["spec"].get("taints", [])
                        if t["key"] != "node.kubernetes.io/not-ready"
                    ]
                    node["spec"].pop("taints", None)
                    if taints:
                        node["spec"]["taints"] = taints
        return nodes

    def pod_list(self) -> list[dict[str, Any]]:
        pods = copy.deepcopy(self.pods)
        if self.recovered_since() is not None:
            pods = [p for p in pods if "deletionTimestamp" not in p["metadata"]]
        return pods


# ------------------------------------------------------------------ Table (kubectl's printed columns)


def _column(name: str, kind: str = "string", priority: int = 0, fmt: str = "") -> dict[str, Any]:
    return {"name": name, "type": kind, "format": fmt, "description": "", "priority": priority}


def _node_row(node: dict[str, Any], now: float) -> list[Any]:
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    status = "Ready" if ready["status"] == "True" else "NotReady"
    if node["spec"].get("unschedulable"):
        status += ",SchedulingDisabled"
    info = node["status"]["nodeInfo"]
    internal = next(
        (a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"), "<none>"
    )
    age = human_age(now - parse_time(node["metadata"]["creationTimestamp"]))
    return [
        node["metadata"]["name"], status, "<none>", age, info["kubeletVersion"], internal, "<none>",
        info["osImage"], info["kernelVersion"], info["containerRuntimeVersion"],
    ]  # fmt: skip


def _pod_row(pod: dict[str, Any], now: float) -> list[Any]:
    statuses = pod["status"].get("containerStatuses", [])
    ready = sum(1 for s in statuses if s.get("ready"))
    status = "Terminating" if "deletionTimestamp" in pod["metadata"] else pod["status"]["phase"]
    restarts = sum(s.get("restartCount", 0) for s in statuses)
    age = human_age(now - parse_time(pod["metadata"]["creationTimestamp"]))
    return [
        pod["metadata"]["name"], f"{ready}/{len(pod['spec']['containers'])}", status, restarts, age,
        pod["status"].get("podIP", "<none>"), pod["spec"].get("nodeName", "<none>"), "<none>", "<none>",
    ]  # fmt: skip


TABLE_COLUMNS = {
    "nodes": [
        _column("Name", fmt="name"), _column("Status"), _column("Roles"), _column("Age"), _column("Version"),
        _column("Internal-IP", priority=1), _column("External-IP", priority=1), _column("OS-Image", priority=1),
        _column("Kernel-Version", priority=1), _column("Container-Runtime", priority=1),
    ],
    "pods": [
        _column("Name", fmt="name"), _column("Ready"), _column("Status"), _column("Restarts", "integer"),
        _column("Age"), _column("IP", priority=1), _column("Node", priority=1),
        _column("Nominated Node", priority=1), _column("Readiness Gates", priority=1),
    ],
}  # fmt: skip


def as_table(resource: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    now = time.time()
    row = _node_row if resource == "nodes" else _pod_row
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": "48213377"},
        "columnDefinitions": TABLE_COLUMNS[resource],
        "rows": [
            {
                "cells": row(item, now),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            }
            for item in items
        ],
    }


# ------------------------------------------------------------------ HTTP


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": details, "code": code,
    }  # fmt: skip


class StandInHandler(BaseHTTPRequestHandler):
    """GET-only routes of the stand-in; everything else is a real-shaped Status error."""

    cluster: Cluster
    server_version = "kube-standin"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        code, body = self.route(url.path.rstrip("/") or "/", query)
        if body.get("kind") in _LIST_KINDS.values() and "as=Table" in self.headers.get("Accept", ""):
            body = as_table("nodes" if body["kind"] == "NodeList" else "pods", body["items"])
        elif body.get("kind") in ("Node", "Pod") and "as=Table" in self.headers.get("Accept", ""):
            body = as_table("nodes" if body["kind"] == "Node" else "pods", [body])
        self.reply(code, body)

    def do_DELETE(self) -> None:
        self.reply(405, status(405, "MethodNotAllowed", "the lab's Kubernetes API stand-in is read-only"))

    do_POST = do_PUT = do_PATCH = do_DELETE

    def route(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        docs = self.cluster.documents
        fixed = {"/version": "version", "/api": "api", "/apis": "apis", "/api/v1": "api_v1"}
        if path in fixed:
            return 200, docs[fixed[path]]
        for unsupported in ("watch", "labelSelector"):
            if unsupported in query:
                return 400, status(
                    400, "BadRequest", f"the lab's Kubernetes API stand-in does not support {unsupported}"
                )
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "nodes"] and len(parts) <= 4:
            return self.collection(
                "nodes", self.cluster.node_list(), parts[3] if len(parts) == 4 else None, query
            )
        pods = self.cluster.pod_list()
        if parts == ["api", "v1", "pods"]:
            return self.collection("pods", pods, None, query)
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) in (5, 6) and parts[4] == "pods":
            in_namespace = [p for p in pods if p["metadata"]["namespace"] == parts[3]]
            return self.collection("pods", in_namespace, parts[5] if len(parts) == 6 else None, query)
        return 404, status(404, "NotFound", "the server could not find the requested resource")

    def collection(
        self, resource: str, items: list[dict[str, Any]], name: str | None, query: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        if name is not None:
            found = next((i for i in items if i["metadata"]["name"] == name), None)
            if found is None:
                return 404, status(
                    404, "NotFound", f'{resource} "{name}" not found', name=name, kind=resource
                )
            return 200, found
        for term in filter(None, query.get("fieldSelector", "").split(",")):
            selector = re.fullmatch(r"(spec\.nodeName|status\.phase)(!=|==|=)(.*)", term)
            if resource != "pods" or not selector:
                return 400, status(
                    400,
                    "BadRequest",
                    f'"{term}": the lab\'s stand-in knows only the field selectors spec.nodeName and status.phase (pods)',
                )
            field, operator, value = selector.groups()
            section = "spec" if field == "spec.nodeName" else "status"
            key = field.split(".", 1)[1]
            items = [i for i in items if (i[section].get(key) == value) != (operator == "!=")]
        kind = _LIST_KINDS[resource]
        return 200, {
            "kind": kind,
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "48213377"},
            "items": items,
        }

    def reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shim-state", type=Path, required=True, help="the lab shim's state.json")
    parser.add_argument("--port-file", type=Path, required=True, help="written with the port once listening")
    args = parser.parse_args(argv)
    handler = type("Handler", (StandInHandler,), {"cluster": Cluster(args.shim_state)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    tmp = args.port_file.with_suffix(".tmp")
    tmp.write_text(str(server.server_address[1]), encoding="ascii")
    tmp.replace(args.port_file)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
