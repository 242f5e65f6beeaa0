"""Shared fixtures: an isolated journal per test, and the real `cairn` command."""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml

from engine.core import doctor
from engine.lab.ssh_fleet import FleetError, SshFleet, make_fleet
from tests.alertmanagers import AlertmanagerCluster, start_cluster
from tests.chromium import Chromium
from tests.disks import SmallDisk
from tests.people import Person, ensure_people
from tests.postgres import PgCluster, PgError
from tests.procs import processes_with

REPO = Path(__file__).resolve().parent.parent
RUNBOOKS = REPO / "runbooks"
FIXTURES = REPO / "tests" / "fixtures"


def alive(pid: int) -> bool:
    """Is ``pid`` running? A zombie is dead, only not yet reaped (PID 1 reaps orphans late here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


@functools.cache
def _program_missing(name: str) -> str:
    """Why ``name`` cannot be used here ("" when it can), from the same table as `cairn doctor`."""
    finding = doctor.check_program(doctor.by_name(name))
    if finding.ok:
        return ""
    package = finding.program.package
    install = f"apt-get install {package}" if package else finding.program.hint
    return f"{name} ({finding.problem}; {install})"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test whose marker names a program this machine lacks fails at once, naming the package.

    Markers are for selection, never for skipping: ./scripts/test installs every package, and a
    missing one must read as what it is, not as a Python error deep inside the test.
    """
    needed = [p for mark in item.iter_markers() for p in doctor.TEST_MARKERS.get(mark.name, ())]
    missing = [why for name in dict.fromkeys(needed) if (why := _program_missing(name))]
    if missing:
        pytest.fail(
            f"this test needs {', '.join(missing)}; ./scripts/test installs it as root, and "
            "`cairn doctor --for tests` lists everything missing",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own journal and cache folder; nothing touches ~/.local/state or ~/.cache."""
    state = tmp_path / "state"
    monkeypatch.setenv("CAIRN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CAIRN_NO_CACHE", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("CAIRN_JOURNAL", str(state / "cairn" / "journal.db"))
    monkeypatch.delenv("CAIRN_RUNBOOKS", raising=False)
    return state


@pytest.fixture
def journal_path(isolated_state: Path) -> Path:
    """Where this test's journal lives."""
    return isolated_state / "cairn" / "journal.db"


def cairn_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m engine.cli`."""
    script = Path(sys.executable).parent / "cairn"
    return [str(script)] if script.exists() else [sys.executable, "-m", "engine.cli"]


class CairnRunner(Protocol):
    """The ``cairn`` fixture's value: runs `cairn *args` (``env`` added to this environment)."""

    def __call__(
        self, *args: str, cwd: Path | None = None, timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture
def cairn(tmp_path: Path) -> CairnRunner:
    """Run the real `cairn` command in a subprocess (stdin is not a terminal)."""

    def run(
        *args: str, cwd: Path | None = None, timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cairn_command(), *args],
            cwd=cwd or tmp_path,
            env=os.environ | env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


class RunbookDir(Protocol):
    """The ``runbook_dir`` fixture's value: writes runbooks (YAML texts) into ``tmp_path/name``; returns it."""

    def __call__(self, *texts: str, name: str = "rb") -> Path: ...


@pytest.fixture
def runbook_dir(tmp_path: Path) -> RunbookDir:
    """Write runbooks (dedented YAML text) into a fresh folder; returns the folder."""

    def write(*texts: str, name: str = "rb") -> Path:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        for text in texts:
            body = textwrap.dedent(text).lstrip()
            rid = next(line.split(":", 1)[1].strip() for line in body.splitlines() if line.startswith("id:"))
            (folder / f"{rid}.yaml").write_text(body, encoding="utf-8")
        return folder

    return write


# --- A real OpenSSH fleet on loopback (engine/lab/ssh_fleet.py) -------------------------------------
SSHD_NEEDED = "the SSH tests need a real sshd (.ci/run installs openssh-server)"


@pytest.fixture(scope="session")
def ssh_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshFleet]:
    """20 started sshd hosts, host01..host20 on 127.0.0.2-21, shared by the whole session: do not break them."""
    try:
        fleet = make_fleet(tmp_path_factory.mktemp("fleet"), 20, first_address=2)
        fleet.start()
    except FleetError as exc:
        pytest.fail(f"{exc}\n{SSHD_NEEDED}", pytrace=False)
    try:
        yield fleet
    finally:
        fleet.stop()


class OwnFleet(Protocol):
    """The ``own_ssh_fleet`` fixture's value: starts a fresh fleet of ``count`` hosts."""

    def __call__(self, count: int = 3, *, first_address: int | None = None) -> SshFleet: ...


@pytest.fixture
def own_ssh_fleet(tmp_path: Path) -> Iterator[OwnFleet]:
    """``own_ssh_fleet(count, first_address=...)``: a fresh started fleet this test may break; stopped after it.

    Addresses start at 127.0.0.100 (clear of ``ssh_fleet``) and each call of one test takes the
    next block; every fleet picks its own random port.
    """
    fleets: list[SshFleet] = []
    next_address = 100

    def start(count: int = 3, *, first_address: int | None = None) -> SshFleet:
        nonlocal next_address
        first = next_address if first_address is None else first_address
        try:
            fleet = make_fleet(tmp_path / f"fleet{len(fleets) + 1}", count, first_address=first)
            fleets.append(fleet)
            fleet.start()
        except FleetError as exc:
            pytest.fail(f"{exc}\n{SSHD_NEEDED}", pytrace=False)
        next_address = max(next_address, first + count)
        return fleet

    yield start
    failures: list[FleetError] = []
    for fleet in reversed(fleets):  # stop them all even if one cannot be stopped
        try:
            fleet.stop()
        except FleetError as exc:
            failures.append(exc)
    if failures:
        raise failures[0]


# --- Practice labs (engine/lab/lifecycle.py), driven through the real `cairn lab` ------------------------


@dataclass(frozen=True)
class Lab:
    """A lab started by `cairn lab up NAME --dir ... --json` for one test."""

    name: str
    root: Path
    info: dict[str, Any]

    @property
    def inventory(self) -> str:
        return str(self.info["inventory"])

    @property
    def inputs(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(Path(self.info["inputs"]).read_text(encoding="utf-8"))
        return loaded

    def run_args(self, *extra: str) -> list[str]:
        """Arguments for `cairn run` on this lab: `run NAME -i INVENTORY -e @INPUTS EXTRA...`."""
        return ["run", self.name, "-i", self.inventory, "-e", f"@{self.info['inputs']}", *extra]


class LabStarter(Protocol):
    """The ``lab`` fixture's value: starts a practice lab (stopped after the test)."""

    def __call__(self, name: str, *, healthy: bool = False) -> Lab: ...


@pytest.fixture
def lab(cairn: CairnRunner, tmp_path: Path) -> Iterator[LabStarter]:
    """Start a lab (`lab("ip-whitelist-breakage", healthy=False)`); every lab started is stopped after the test."""
    root = tmp_path / "labs"
    started = False

    def start(name: str, *, healthy: bool = False) -> Lab:
        nonlocal started
        started = True
        done = cairn("lab", "up", name, "--dir", str(root), "--json", *(["--healthy"] if healthy else []))
        assert done.returncode == 0, f"cairn lab up {name} failed:\n{done.stdout}\n{done.stderr}"
        return Lab(name, root, json.loads(done.stdout)["labs"][0])

    yield start
    if started:
        done = cairn("lab", "down", "--dir", str(root))
        assert done.returncode == 0, done.stderr


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A small tmpfs under ``tmp_path`` that a test fills and empties (tests/disks.py); unmounted after."""
    small = SmallDisk(tmp_path / "small-disk")
    small.mount()
    try:
        yield small
    finally:
        small.unmount()


# --- A throwaway PostgreSQL on loopback (tests/postgres.py) ------------------------------------------


def _need_postgresql() -> None:
    """Fail (never skip) when PostgreSQL's programs are missing, naming the package, as the marker does."""
    missing = [why for name in doctor.TEST_MARKERS["postgres"] if (why := _program_missing(name))]
    if missing:
        pytest.fail(
            f"this test needs {', '.join(missing)}; ./scripts/test installs it as root, and "
            "`cairn doctor --for tests` lists everything missing",
            pytrace=False,
        )


def _started_cluster() -> PgCluster:
    _need_postgresql()
    cluster: PgCluster | None = None
    try:
        cluster = PgCluster()
        cluster.start()
    except PgError as exc:
        if cluster is not None:
            cluster.close()
        pytest.fail(f"could not start a throwaway PostgreSQL: {exc}", pytrace=False)
    return cluster


@pytest.fixture(scope="session")
def people() -> dict[str, Person]:
    """Real Unix accounts (``alice``, ``bob`` in group ``cairn-t-sre``; ``carol`` outside it) that
    run ``cairn`` as themselves: identities come from the uid (:mod:`tests.people`)."""
    return ensure_people()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL cluster for the whole session (started once, removed at the end).

    Tests may restart it (``restart()``) but must leave it running; a test that breaks it on purpose
    takes ``own_pg_cluster`` instead.
    """
    cluster = _started_cluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def own_pg_cluster() -> Iterator[PgCluster]:
    """A fresh started PostgreSQL cluster for this test alone (about a second), removed after it."""
    cluster = _started_cluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def postgres_url(pg_cluster: PgCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT/NAME``: a fresh empty database in ``pg_cluster`` for this
    test, dropped after it even while servers still hold connections."""
    if not pg_cluster.running:  # an earlier test stopped it and failed before starting it again
        pg_cluster.start()
    stem = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())[:40]
    name = f"t_{stem}_{secrets.token_hex(4)}"
    url = pg_cluster.create_database(name)
    try:
        yield url
    finally:
        if not pg_cluster.running:
            pg_cluster.start()
        pg_cluster.drop_database(name)


# --- Clustered Alertmanagers on loopback (tests/alertmanagers.py) ------------------------------------


class AlertmanagerClusterStarter(Protocol):
    """The ``alertmanager_cluster`` fixture's value: starts ``n`` clustered Alertmanagers (``.apis`` are
    their API URLs, ``.processes`` their processes, for a test that kills one)."""

    def __call__(self, n: int, config: str, *, peer_timeout: str = "15s") -> AlertmanagerCluster: ...


@pytest.fixture
def alertmanager_cluster(tmp_path: Path) -> Iterator[AlertmanagerClusterStarter]:
    """``alertmanager_cluster(2, webhook_config([url1, url2], TOKEN)).apis``: real clustered
    Alertmanagers, ready and seeing each other (tests/alertmanagers.py); all stopped after the test."""
    clusters: list[AlertmanagerCluster] = []

    def start(n: int, config: str, *, peer_timeout: str = "15s") -> AlertmanagerCluster:
        folder = tmp_path / f"alertmanagers{len(clusters) + 1}"
        folder.mkdir()
        cluster = start_cluster(n, config, folder, peer_timeout=peer_timeout)
        clusters.append(cluster)
        return cluster

    yield start
    for cluster in clusters:
        cluster.stop()


# --- No process outlives its test --------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test (and its other fixtures), end every process whose command line names its
    ``tmp_path``: a step left waiting for a file when the test failed before writing it, the command of
    a server killed with -9. Torn down last, so every fixture has stopped what it knows of first."""
    folder = str(request.getfixturevalue("tmp_path")) if "tmp_path" in request.fixturenames else ""
    yield
    if not folder:
        return
    killed = []
    for pid in processes_with(folder):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue  # it ended meanwhile
        killed.append(pid)
    # SIGKILL is delivered when the process is next scheduled: on a busy machine it can still read as
    # running a moment after kill() returned. The test is over only once each is gone (a zombie is).
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in killed) and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    """One real headless chromium for the test (tests/chromium.py), closed after it."""
    browser = Chromium(tmp_path / "chromium-profile")
    try:
        yield browser
    finally:
        browser.close()
