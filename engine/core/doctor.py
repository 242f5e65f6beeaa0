"""``cairn doctor``: the programs Cairn, its bundled runbooks, its labs and its tests need on this machine.

This module is the one list of external programs and the Debian package each
comes from. ``./scripts/try``, ``./scripts/test`` (and through it ``.ci/run``)
ask it which packages are missing before anything else happens, so it must run
on the system's Python before Cairn's virtual environment exists: standard
library only, and nothing from the rest of :mod:`engine` is imported.

Preflight (:mod:`engine.core.preflight`) reads :func:`package_hint` to say which
package provides a program a runbook needs on a host.

Run it as ``cairn doctor`` (``--json``, ``--for SCOPE``), or from a checkout as
``python3 -m engine.core.doctor --packages SCOPE`` (the Debian packages missing for
a scope, space-separated: what the setup scripts install).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCOPES = ("runbooks", "labs", "tests")
"""What a program is needed for: the bundled runbooks (run here, on their labs), the practice labs,
the test-suite. ``try`` (``./scripts/try``) is runbooks + labs; ``all`` is every scope."""
SCOPE_ALIASES = {"try": ("runbooks", "labs"), "all": SCOPES, "test": SCOPES}
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
"""Searched after ``$PATH``: a non-root user's PATH often lacks them, yet nginx and sshd live there."""
POSTGRESQL_FOLDERS = ("/usr/lib/postgresql/*/bin",)
"""Where Debian keeps PostgreSQL's programs, one folder per major version, off PATH."""
VERSION_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Use:
    """One thing a program is needed for."""

    scope: str
    """``runbooks``, ``labs`` or ``tests``."""
    what: str
    """What cannot work without it, in words: which runbook and step, which lab, which tests."""


@dataclass(frozen=True, slots=True)
class Program:
    """An external program: where it comes from and what needs it."""

    name: str
    package: str
    """The Debian package that provides it; ``""`` when it is not a Debian package (``hint`` says how)."""
    uses: tuple[Use, ...]
    version: tuple[str, ...] = ()
    """Arguments that make it print its version (``--version``); empty: presence is enough."""
    pattern: str = r"(\d+(?:\.\d+)+)"
    """Where the version is in that output: the first group."""
    minimum: str = ""
    why_minimum: str = ""
    hint: str = ""
    """How to get it when it is not from Debian (a pip package in Cairn's environment)."""
    in_venv: bool = False
    """Installed with Cairn's Python dependencies, beside the interpreter, not from Debian."""
    folders: tuple[str, ...] = ()
    """Glob patterns of folders searched after PATH and sbin, the newest version first (``*`` is the version)."""

    def scopes(self) -> set[str]:
        """The scopes any of its uses belong to."""
        return {use.scope for use in self.uses}


@dataclass(slots=True)
class Finding:
    """What ``doctor`` found for one program."""

    program: Program
    path: str | None
    version: str = ""
    problem: str = ""
    """Why it is not usable ("" when it is): missing, too old, its version could not be read."""

    @property
    def ok(self) -> bool:
        return self.path is not None and not self.problem

    def as_dict(self) -> dict[str, Any]:
        p = self.program
        return {
            "program": p.name,
            "ok": self.ok,
            "path": self.path,
            "version": self.version or None,
            "minimum": p.minimum or None,
            "package": p.package or None,
            "hint": p.hint or None,
            "problem": self.problem or None,
            "uses": [{"scope": u.scope, "what": u.what} for u in p.uses],
        }


@dataclass(slots=True)
class Report:
    """Every program checked for some scopes."""

    scopes: tuple[str, ...]
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    @property
    def missing_packages(self) -> list[str]:
        """Debian packages that would fix what is missing or too old, each once, in table order."""
        packages: list[str] = []
        for finding in self.findings:
            package = finding.program.package
            if not finding.ok and package and package not in packages:
                packages.append(package)
        return packages


def _runbook(name: str, what: str) -> Use:
    return Use("runbooks", f"runbook {name}: {what}")


def _lab(name: str, what: str = "") -> Use:
    return Use("labs", f"lab {name}" + (f": {what}" if what else ""))


def _tests(what: str) -> Use:
    return Use("tests", f"tests: {what}")


def _postgresql(name: str, package: str = "postgresql", **extra: Any) -> Program:
    """One of PostgreSQL's programs, which the postgres-marked tests run a throwaway cluster with."""
    what = (
        f"postgres-marked tests: a throwaway PostgreSQL cluster on loopback (tests/postgres.py runs {name})"
    )
    return Program(
        name, package, (_tests(what),), version=("--version",), folders=POSTGRESQL_FOLDERS, **extra
    )


PROGRAMS: tuple[Program, ...] = (
    Program(
        "bash",
        "bash",
        (
            Use("runbooks", "every `run` step (Cairn runs each command with bash -c)"),
            Use("labs", "every lab's helper scripts"),
        ),
        version=("--version",),
        minimum="4.4",
        why_minimum="runbook commands use arrays, [[ ]] and process substitution",
    ),
    Program(
        "ps",
        "procps",
        (
            _runbook("node-notready-zombie-shim", "detect shim_zombies, diagnose exec_sessions, remediate"),
            _lab("node-notready-zombie-shim"),
        ),
    ),
    Program(
        "pgrep",
        "procps",
        (_runbook("kubelet-cpu-memcg", "detect kubelet_cpu"),),
    ),
    Program(
        "awk",
        "mawk",
        (
            _runbook("node-notready-zombie-shim", "detect shim_zombies, diagnose exec_sessions"),
            _runbook("branch-cleanup", "detect superseded_releases"),
            _runbook("kubelet-cpu-memcg", "diagnose memory_cgroups, remediate drop_caches"),
        ),
    ),
    Program(
        "timeout",
        "coreutils",
        (_runbook("kubelet-cpu-memcg", "detect memory_stat_read (a read that hangs is bounded)"),),
    ),
    Program(
        "git",
        "git",
        (
            _runbook("branch-cleanup", "every step"),
            _lab("branch-cleanup", "builds its repository with git"),
            _tests("git-marked tests (tests/runbooks/test_branch_cleanup.py, the README tour)"),
        ),
        version=("--version",),
        minimum="2.38",
        why_minimum="branch-cleanup re-runs merges with `git merge-tree --write-tree` (git 2.38)",
    ),
    Program(
        "crontab",
        "cron",
        (
            _runbook(
                "node-notready-zombie-shim",
                "remediation step install_session_cleanup (ansible.builtin.cron needs crontab); "
                "the default run of ./scripts/try --yes",
            ),
            _tests("cron-marked tests (the zombie-shim remediation)"),
        ),
    ),
    Program(
        "kubectl",
        "kubernetes-client",
        (
            _runbook(
                "node-notready-zombie-shim", "detect node_ready, stuck_terminating_pods; diagnose exec_probes"
            ),
            _lab("node-notready-zombie-shim", "its Kubernetes API stand-in is read with the real kubectl"),
            _tests("kubectl-marked tests"),
        ),
        version=("version", "--client"),
        pattern=r"v(\d+\.\d+(?:\.\d+)?)",
    ),
    Program(
        "nginx",
        "nginx",
        (
            _runbook("ip-whitelist-breakage", "detect allow_list_in_use, remediate update_allow_list"),
            _runbook("dual-platform-deploy", "detect upstream_weights, remediate shift_weights"),
            _lab("ip-whitelist-breakage", "runs its own nginx"),
            _lab("dual-platform-deploy", "runs its own nginx"),
            _tests("nginx-marked tests"),
        ),
        version=("-v",),
    ),
    Program(
        "curl",
        "curl",
        (
            _runbook("ip-whitelist-breakage", "detect caller_rejections, diagnose migration_stage"),
            _runbook("dual-platform-deploy", "detect observed_split, platform_versions"),
        ),
        version=("--version",),
    ),
    Program(
        "ansible-playbook",
        "",
        (
            _runbook(
                "node-notready-zombie-shim", "remediation step install_session_cleanup (an ansible step)"
            ),
            _runbook("kubelet-cpu-memcg", "remediation step upgrade_kernel (a playbook)"),
        ),
        hint="part of ansible-core, one of Cairn's Python dependencies: reinstall Cairn (pip install .)",
        in_venv=True,
    ),
    Program(
        "ansible-inventory",
        "",
        (
            _runbook("platform-adoption", "every step reads the platform inventory with it"),
            _lab("platform-adoption"),
        ),
        hint="part of ansible-core, one of Cairn's Python dependencies: reinstall Cairn (pip install .)",
        in_venv=True,
    ),
    Program(
        "sshd",
        "openssh-server",
        (_tests("ssh-marked tests: loopback sshd hosts (engine/lab/ssh_fleet.py)"),),
    ),
    Program(
        "ssh-keygen",
        "openssh-client",
        (_tests("ssh-marked tests: host and user keys of the loopback fleet"),),
    ),
    Program(
        "/usr/bin/python3",
        "python3",
        (_tests("ssh-marked tests: Ansible modules on the loopback hosts (ansible_python_interpreter)"),),
    ),
    Program(
        "ip",
        "iproute2",
        (
            _tests(
                "ssh-marked tests: bastions, with targets in network namespaces only a bastion reaches (tests/bastions.py)"
            ),
        ),
    ),
    Program(
        "ss",
        "iproute2",
        (_tests("ssh-marked tests: the one connection all hosts behind a bastion share, counted"),),
    ),
    Program(
        "sudo",
        "sudo",
        (
            _tests(
                "become tests: steps run as root through a real sudo, locally and over SSH (its visudo "
                "checks the sudoers rules they install)"
            ),
        ),
        version=("-V",),
    ),
    Program(
        "chromium",
        "chromium",
        (_tests("browser-marked tests: the training site opened in headless chromium"),),
        version=("--version",),
    ),
    Program(
        "tmux",
        "tmux",
        (_tests("tmux-marked tests: `cairn tui` in a real terminal"),),
        version=("-V",),
    ),
    Program(
        "prometheus-alertmanager",
        "prometheus-alertmanager",
        (_tests("alertmanager-marked tests: cairn serve fed by a real Alertmanager"),),
        version=("--version",),
    ),
    Program(
        "amtool",
        "prometheus-alertmanager",
        (_tests("alertmanager-marked tests: alerts fired with amtool"),),
    ),
    _postgresql("initdb"),
    _postgresql("pg_ctl"),
    _postgresql(
        "postgres",
        minimum="13",
        why_minimum="the tests drop their databases with DROP DATABASE … WITH (FORCE) (PostgreSQL 13)",
    ),
    _postgresql("psql", "postgresql-client"),
)
"""Every external program, in the order ``cairn doctor`` lists them."""

TEST_MARKERS: dict[str, tuple[str, ...]] = {
    "git": ("git",),
    "ssh": ("sshd", "ssh-keygen", "/usr/bin/python3", "ip", "ss"),
    "nginx": ("nginx",),
    "kubectl": ("kubectl",),
    "browser": ("chromium",),
    "tmux": ("tmux",),
    "alertmanager": ("prometheus-alertmanager", "amtool"),
    "cron": ("crontab",),
    "postgres": ("initdb", "pg_ctl", "postgres", "psql"),
    "sudo": ("sudo",),
}
"""The programs a pytest marker's tests need: a test that lacks one fails at once, naming the package."""

EXTRA_PACKAGES: dict[str, str] = {
    "containerd": "containerd",
    "docker": "docker.io",
    "python3": "python3",
    "systemctl": "systemd",
    "jq": "jq",
    "ss": "iproute2",
    "ip": "iproute2",
    "find": "findutils",
    "xargs": "findutils",
    "grep": "grep",
    "sed": "sed",
    "getconf": "libc-bin",
    "kill": "procps",
    "pkill": "procps",
    "visudo": "sudo",
    **dict.fromkeys(
        ("sleep", "date", "cat", "sort", "head", "tail", "stat", "df", "du", "tr", "wc"), "coreutils"
    ),
}
"""Debian packages of programs runbooks need on their targets that ``doctor`` does not check here."""
NOT_DEBIAN: dict[str, str] = {
    "crictl": "not a Debian package: cri-tools (https://github.com/kubernetes-sigs/cri-tools/releases)",
}


def debian_package(program: str) -> str:
    """The Debian package that provides ``program`` (a name or a path); "" when unknown or not Debian's."""
    name = Path(program).name
    for known in PROGRAMS:
        if Path(known.name).name == name:
            return known.package
    return EXTRA_PACKAGES.get(name, "")


def package_hint(program: str) -> str:
    """Where ``program`` (a name or a path) comes from, in words ("" when unknown)."""
    package = debian_package(program)
    if package:
        return f"Debian package {package}"
    name = Path(program).name
    known = next((p for p in PROGRAMS if Path(p.name).name == name), None)
    return known.hint if known is not None else NOT_DEBIAN.get(name, "")


def by_name(name: str) -> Program:
    """The program called ``name`` in :data:`PROGRAMS`."""
    for program in PROGRAMS:
        if program.name == name:
            return program
    raise KeyError(name)


def resolve_scopes(names: Sequence[str]) -> tuple[str, ...]:
    """Scope names and aliases (``try``, ``all``, ``test``) → the scopes, each once, in order."""
    chosen: set[str] = set()
    for name in names or ("all",):
        if name in SCOPE_ALIASES:
            chosen.update(SCOPE_ALIASES[name])
        elif name in SCOPES:
            chosen.add(name)
        else:
            raise ValueError(f"unknown scope {name!r}; choose from {', '.join((*SCOPES, *SCOPE_ALIASES))}")
    return tuple(s for s in SCOPES if s in chosen)


def locate(name: str, path: str | None = None, folders: Sequence[str] = ()) -> str | None:
    """The executable called ``name`` on ``path`` (default ``$PATH``), then in the sbin folders, then in
    the folders the ``folders`` glob patterns match (newest version first)."""
    search = path if path is not None else os.environ.get("PATH", os.defpath)
    return shutil.which(name, path=os.pathsep.join([search, *SBIN, *versioned_folders(folders)]))


def versioned_folders(patterns: Sequence[str]) -> list[str]:
    """The folders each glob pattern matches, the highest version (what ``*`` matched) first."""
    found: list[str] = []
    for pattern in patterns:
        fixed = len(pattern.split("*", 1)[0])  # the version is read after the pattern's fixed start
        found.extend(sorted(glob.glob(pattern), key=lambda f: version_tuple(f[fixed:]), reverse=True))
    return found


def find_program(name: str) -> str | None:
    """Where Cairn's own commands find ``name``: a path as given, else beside Cairn's Python (ansible-core's
    programs live in its venv), else on PATH and in the sbin folders."""
    if "/" in name:
        return name if os.access(name, os.X_OK) else None
    beside = Path(sys.executable).parent / name
    return str(beside) if os.access(beside, os.X_OK) else locate(name)


def version_tuple(text: str) -> tuple[int, ...]:
    """``2.39.5`` → ``(2, 39, 5)`` (digits only; ``1.22.1-9`` → ``(1, 22, 1)``)."""
    return tuple(int(part) for part in re.findall(r"\d+", text)[:4])


def check_program(program: Program, path: str | None = None) -> Finding:
    """Find ``program`` and, when it matters, read its version."""
    found = find_program(program.name) if program.in_venv else locate(program.name, path, program.folders)
    if found is None:
        where = "beside Cairn's Python or on PATH" if program.in_venv else "on PATH or in /usr/sbin"
        if program.folders:
            where = f"on PATH, in /usr/sbin or in {' or '.join(program.folders)}"
        return Finding(program, None, problem=f"not found {where}")
    finding = Finding(program, found)
    if not program.version:
        return finding
    try:
        done = subprocess.run(
            [found, *program.version],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
            env=os.environ | {"LC_ALL": "C"},
        )
        text = done.stdout + done.stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        finding.problem = f"found at {found} but `{program.name} {' '.join(program.version)}` failed: {exc}"
        return finding
    match = re.search(program.pattern, text)
    if match is None:
        if program.minimum:
            first = (text.strip().splitlines() or ["no output"])[0][:120]
            finding.problem = f"version not understood ({first!r}); need {program.minimum} or newer"
        return finding
    finding.version = match.group(1)
    if program.minimum and version_tuple(finding.version) < version_tuple(program.minimum):
        finding.problem = f"version {finding.version} is older than {program.minimum}: {program.why_minimum}"
    return finding


def examine(scopes: Sequence[str] = SCOPES, *, path: str | None = None, debian_only: bool = False) -> Report:
    """Check every program any of ``scopes`` needs (``debian_only``: leave out pip-installed ones)."""
    wanted = [
        p for p in PROGRAMS if p.scopes() & set(scopes) and not (debian_only and (p.in_venv or not p.package))
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        findings = list(pool.map(lambda p: check_program(p, path), wanted))
    report = Report(tuple(scopes), findings)
    if not _can_make_venvs():
        ensurepip = Program(
            "python3 -m venv",
            "python3-venv",
            tuple(Use(scope, "the setup scripts create .venv with it") for scope in scopes),
        )
        report.findings.insert(0, Finding(ensurepip, None, problem="this Python cannot create a venv"))
    return report


def _can_make_venvs() -> bool:
    """Does this interpreter have ensurepip (Debian splits it into python3-venv)?"""
    try:
        import ensurepip  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def install_command(packages: Sequence[str], *, root: bool | None = None) -> str:
    """The exact command that installs ``packages`` on Debian (with sudo unless running as root)."""
    root = os.geteuid() == 0 if root is None else root
    sudo = "" if root else "sudo "
    return f"{sudo}apt-get install -y --no-install-recommends {' '.join(packages)}"


def report_text(report: Report) -> str:
    """``cairn doctor`` as text: a line per program, then what to install."""
    lines = [f"Cairn doctor — programs needed for: {', '.join(report.scopes)}", ""]
    rows = [
        (
            "ok" if f.ok else ("MISSING" if f.path is None else "PROBLEM"),
            f.program.name,
            f.version or "-",
            f.program.package or "pip: ansible-core",
            f.path or "-",
        )
        for f in report.findings
    ]
    header = ("", "PROGRAM", "VERSION", "FROM", "PATH")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

    def line(cells: tuple[str, ...]) -> str:
        return "  " + "".join(c.ljust(w + 2) for c, w in zip(cells, widths, strict=False)) + cells[-1]

    indent = " " * (2 + widths[0] + 2)
    lines.append(line(header))
    for finding, row in zip(report.findings, rows, strict=True):
        lines.append(line(row))
        if not finding.ok:
            program = finding.program
            lines.append(f"{indent}{finding.problem}")
            lines.extend(f"{indent}blocks {use.what}" for use in program.uses)
            if program.hint:
                lines.append(f"{indent}{program.hint}")
    bad = [f for f in report.findings if not f.ok]
    lines.append("")
    if not bad:
        lines.append(f"all {len(report.findings)} programs are here")
        return "\n".join(lines)
    lines.append(f"{len(bad)} of {len(report.findings)} programs missing or unusable")
    if report.missing_packages:
        lines.append(f"install them with:  {install_command(report.missing_packages)}")
        lines.append("(./scripts/try and ./scripts/test do that themselves when run as root)")
    return "\n".join(lines)


def report_data(report: Report) -> dict[str, Any]:
    """``cairn doctor --json``."""
    return {
        "ok": report.ok,
        "scopes": list(report.scopes),
        "programs": [f.as_dict() for f in report.findings],
        "missing_packages": report.missing_packages,
        "install": install_command(report.missing_packages) if report.missing_packages else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m engine.core.doctor``: the same report as ``cairn doctor``, or ``--packages SCOPE``."""
    parser = argparse.ArgumentParser(prog="python3 -m engine.core.doctor", description=__doc__)
    parser.add_argument("--for", dest="scopes", action="append", default=[], metavar="SCOPE")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--packages",
        metavar="SCOPE",
        help="print only the Debian packages missing for SCOPE (try, test, all …), space-separated",
    )
    args = parser.parse_args(argv)
    try:
        if args.packages:
            report = examine(resolve_scopes([args.packages]), debian_only=True)
            print(" ".join(report.missing_packages))
            return 0
        report = examine(resolve_scopes(args.scopes))
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps(report_data(report), indent=2) if args.json else report_text(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
