"""ip-whitelist-breakage end to end against the lab: a real nginx allow list, callers on loopback addresses."""

from __future__ import annotations

import http.client
import re
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from engine.lab.whitelist import caller_addresses
from tests.conftest import CairnRunner, Lab, LabStarter
from tests.runbooks.reports import results, run_json, statuses

pytestmark = [pytest.mark.lab, pytest.mark.cli, pytest.mark.nginx]

RUNBOOK = "ip-whitelist-breakage"
ROLES = ("checkout", "billing", "reports", "billing_old", "legacy_export")


def port_of(lab: Lab) -> int:
    port = urlsplit(str(lab.inputs["provider_url"])).port
    assert port is not None
    return port


def get_from(lab: Lab, source: str) -> int:
    """The HTTP status a GET to the provider gets when sent from ``source``, as a caller there would see it."""
    conn = http.client.HTTPConnection("127.0.0.1", port_of(lab), timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", "/ledger/balance")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def answers(lab: Lab) -> dict[str, int]:
    """What each of the lab's addresses gets from the provider right now."""
    addr = caller_addresses(port_of(lab))
    return {role: get_from(lab, addr[role]) for role in ROLES}


def allow_entries(lab: Lab) -> list[str]:
    text = Path(lab.inputs["allow_list"]).read_text(encoding="utf-8")
    return [line.split()[1].rstrip(";") for line in text.splitlines() if line.startswith("allow ")]


def backups(lab: Lab) -> list[Path]:
    allow_list = Path(lab.inputs["allow_list"])
    return sorted(allow_list.parent.glob(allow_list.name + ".cairn-*.bak"))


def accepting_workers(lab: Lab) -> set[str]:
    """Pids of the lab nginx's workers that accept connections (not those shutting down after a reload)."""
    master = (Path(lab.inputs["nginx_conf"]).parent / "nginx.pid").read_text(encoding="ascii").strip()
    listing = subprocess.run(
        ["ps", "--ppid", master, "-o", "pid=,args="], check=False, capture_output=True, text=True
    ).stdout
    return {line.split()[0] for line in listing.splitlines() if line.rstrip().endswith("worker process")}


def reload_lab_nginx(lab: Lab) -> None:
    """Reload the lab's nginx and wait until only workers with the new configuration accept connections."""
    before = accepting_workers(lab)
    nginx = [lab.inputs["nginx_bin"], "-c", lab.inputs["nginx_conf"], "-e", lab.inputs["nginx_error_log"]]
    subprocess.run([*nginx, "-s", "reload"], check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while not (now := accepting_workers(lab)) or now & before:
        assert time.monotonic() < deadline, f"nginx kept its old workers {before & now} after the reload"
        time.sleep(0.02)  # polling interval, not synchronisation


def test_detect_and_diagnose_show_the_rejected_caller_and_the_stale_entries(
    cairn: CairnRunner, lab: LabStarter
) -> None:
    wl = lab(RUNBOOK)
    addr = caller_addresses(port_of(wl))
    before = Path(wl.inputs["allow_list"]).read_bytes()

    code, report = run_json(cairn, wl)  # no terminal, no --yes: nobody is asked to remediate

    assert code == 1, report
    assert report["hosts"][0]["outcome"] == "present"
    detect = results(report, "detect")
    assert statuses(report, "detect") == {
        "callers_known": "ok",
        "allow_list_in_use": "ok",
        "caller_rejections": "finding",
        "missing_entries": "finding",
        "stale_entries": "finding",
    }
    assert detect["allow_list_in_use"]["out"] == 4
    assert detect["caller_rejections"]["out"] == [
        {"name": "checkout", "address": addr["checkout"], "code": "200"},
        {"name": "billing", "address": addr["billing"], "code": "403"},
        {"name": "reports", "address": addr["reports"], "code": "200"},
    ]
    assert detect["caller_rejections"]["message"] == (
        f"1 of 3 callers rejected: billing from {addr['billing']} got HTTP 403"
    )
    assert detect["missing_entries"]["out"] == [{"name": "billing", "address": addr["billing"]}]
    assert detect["stale_entries"]["out"] == [
        {"entry": addr["billing_old"], "was": "billing"},
        {"entry": addr["legacy_export"], "was": "legacy-export"},
    ]
    assert detect["stale_entries"]["message"].startswith(
        "2 stale allow entries, open to whoever gets the address next"
    )

    diagnose = results(report, "diagnose")
    use = {row["entry"]: row for row in diagnose["stale_entry_use"]["out"]}
    # Billing's old address let in its own request before the move, and one more after it: someone else's.
    assert use[addr["billing_old"]]["allowed"] == "2"
    assert use[addr["billing_old"]]["after_move"] == "1"
    assert use[addr["billing_old"]]["now_at"] == addr["billing"]
    assert "GET /ledger/export-all" in use[addr["billing_old"]]["last"]
    assert use[addr["legacy_export"]]["after_move"] == "-"  # no current caller to have moved
    assert use[addr["legacy_export"]]["allowed"] == "0"
    assert diagnose["stale_entry_use"]["status"] == "finding"
    assert "1 request(s) let in AFTER billing moved" in diagnose["stale_entry_use"]["message"]
    assert diagnose["migration_stage"]["out"] == [
        {"stage": "0", "proxy": "-", "key_auth": "no", "probe_code": "403"}
    ]
    assert diagnose["migration_stage"]["message"].startswith(
        "stage 0 of 3: no proxy address in the allow list"
    )

    assert results(report, "remediate")["update_allow_list"]["status"] == "not_asked"
    assert Path(wl.inputs["allow_list"]).read_bytes() == before
    assert backups(wl) == []


def test_remediation_updates_the_list_and_detect_then_finds_nothing(
    cairn: CairnRunner, lab: LabStarter
) -> None:
    wl = lab(RUNBOOK)
    addr = caller_addresses(port_of(wl))
    original = Path(wl.inputs["allow_list"]).read_bytes()
    assert answers(wl) == {
        "checkout": 200,
        "billing": 403,
        "reports": 200,
        "billing_old": 200,
        "legacy_export": 200,
    }

    code, report = run_json(cairn, wl, "--yes")

    assert code == 0, report
    assert report["hosts"][0]["outcome"] == "remediated"
    remediate = results(report, "remediate")
    assert remediate["update_allow_list"]["status"] == "ok", remediate["update_allow_list"]
    assert remediate["update_allow_list"]["message"].startswith(
        "allow list updated: 1 added, 2 stale removed"
    )
    # Manual migration steps are never faked by --yes; stage 3 needs a provider that checks keys.
    assert remediate["stage1_proxy"]["status"] == "not_asked"
    assert remediate["stage2_credential"]["status"] == "not_asked"
    assert remediate["stage3_callers_direct"]["message"].startswith("when is false")
    assert set(statuses(report, "verify").values()) == {"ok"}

    # The real state: the file, and what nginx answers each address.
    assert allow_entries(wl) == [addr["checkout"], addr["reports"], addr["billing"]]
    assert answers(wl) == {
        "checkout": 200,
        "billing": 200,
        "reports": 200,
        "billing_old": 403,
        "legacy_export": 403,
    }
    [backup] = backups(wl)
    assert backup.read_bytes() == original
    assert backup.name.endswith(f".cairn-{report['run_id']}.bak")

    again = cairn(*wl.run_args("--phase", "detect"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "healthy" in again.stdout
    assert "detect found nothing" in again.stdout


def test_healthy_lab_is_healthy_and_left_alone(cairn: CairnRunner, lab: LabStarter) -> None:
    wl = lab(RUNBOOK, healthy=True)
    before = Path(wl.inputs["allow_list"]).read_bytes()

    code, report = run_json(cairn, wl, "--yes")

    assert code == 0, report
    assert report["hosts"][0]["outcome"] == "healthy"
    assert set(statuses(report, "detect").values()) == {"ok"}
    assert results(report, "diagnose") == {} and results(report, "remediate") == {}
    assert Path(wl.inputs["allow_list"]).read_bytes() == before
    assert backups(wl) == []


def test_nginx_rejecting_the_new_list_rolls_back_and_keeps_serving_the_old_one(
    cairn: CairnRunner, lab: LabStarter
) -> None:
    wl = lab(RUNBOOK)
    allow_list = Path(wl.inputs["allow_list"])
    original = allow_list.read_bytes()
    with Path(wl.inputs["callers_file"]).open("a", encoding="utf-8") as registry:
        registry.write("typo 10.0.0.300\n")  # the registry hands out an address nginx will not accept
    served_before = answers(wl)

    code, report = run_json(cairn, wl, "--yes")

    assert code == 2, report
    assert report["hosts"][0]["outcome"] == "failed"
    step = results(report, "remediate")["update_allow_list"]
    assert step["status"] == "error"
    assert step["message"].startswith(
        "exit code 1: rolled back, nginx serves the old allow list: "
        'nginx -t rejected the new allow list: [emerg] invalid parameter "10.0.0.300" in '
    )
    assert results(report, "remediate")["stage1_proxy"]["message"].startswith("not run")
    assert statuses(report, "verify")["stale_entries"] == "finding"  # verify ran, for the record

    assert allow_list.read_bytes() == original
    [backup] = backups(wl)
    assert backup.read_bytes() == original
    assert answers(wl) == served_before  # the old list, stale entries included, is what nginx serves


def test_a_failed_post_reload_check_rolls_back_the_reloaded_list(cairn: CairnRunner, lab: LabStarter) -> None:
    """A `deny` before the include shadows the new entry: nginx -t passes, the reload happens, the check fails."""
    wl = lab(RUNBOOK)
    addr = caller_addresses(port_of(wl))
    conf = Path(wl.inputs["nginx_conf"])
    include = f"include {wl.inputs['allow_list']};"
    conf.write_text(conf.read_text(encoding="utf-8").replace(include, f"deny {addr['billing']}; {include}"))
    reload_lab_nginx(wl)
    allow_list = Path(wl.inputs["allow_list"])
    original = allow_list.read_bytes()

    code, report = run_json(cairn, wl, "--yes", "-e", "reload_check_timeout=2s")

    assert code == 2, report
    step = results(report, "remediate")["update_allow_list"]
    assert step["status"] == "error"
    assert step["message"] == (
        "exit code 1: rolled back, nginx serves the old allow list: "
        f"after the reload these callers were rejected for 2s: billing ({addr['billing']}) HTTP 403"
    )
    assert "restored " in step["stderr"]
    assert allow_list.read_bytes() == original
    # Served again: billing's stale entry (the new list had removed it) and legacy-export's.
    assert answers(wl) == {
        "checkout": 200,
        "billing": 403,
        "reports": 200,
        "billing_old": 200,
        "legacy_export": 200,
    }


def test_a_provider_that_checks_api_keys_is_diagnosed_at_stage_2(cairn: CairnRunner, lab: LabStarter) -> None:
    """Stage 2 in nginx: `satisfy any` lets a caller in by address OR by key; a wrong key gets 401."""
    wl = lab(RUNBOOK)
    conf = Path(wl.inputs["nginx_conf"])
    key_check = (
        'location = /auth { internal; if ($http_x_api_key = "") { return 403; } '
        'if ($http_x_api_key = "k-billing") { return 204; } return 401; }\n'
    )
    text = conf.read_text(encoding="utf-8")
    conf.write_text(
        text.replace("location / {", f"{key_check} location / {{ satisfy any; auth_request /auth;", 1)
    )
    reload_lab_nginx(wl)
    assert with_key(wl, "wrong") == 401
    assert with_key(wl, "k-billing") == 200

    code, report = run_json(cairn, wl, "--phase", "diagnose")

    assert code == 1, report
    stage = results(report, "diagnose")["migration_stage"]
    assert stage["status"] == "ok"
    assert stage["out"] == [{"stage": "2", "proxy": "-", "key_auth": "yes", "probe_code": "401"}]
    assert "the provider checks API keys (a wrong X-Api-Key got HTTP 401)" in stage["message"]
    # Callers without a key are still judged by address alone.
    assert results(report, "detect")["caller_rejections"]["status"] == "finding"


def with_key(lab: Lab, key: str) -> int:
    """The HTTP status of a GET from 127.0.0.1 (not in the allow list) carrying ``key``."""
    conn = http.client.HTTPConnection("127.0.0.1", port_of(lab), timeout=5)
    try:
        conn.request("GET", "/ledger/balance", headers={"X-Api-Key": key})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_inputs_that_cannot_be_read_are_errors_not_clean_results(
    cairn: CairnRunner, lab: LabStarter, tmp_path: Path
) -> None:
    """The callers export missing, a folder given as a file, then the access log input naming nginx's error log.

    The last one read as "0 request(s) let in" through each stale entry: the request let in after
    billing moved (a security incident the lab holds) disappeared from the report.
    """
    wl = lab(RUNBOOK)
    missing = tmp_path / "exports" / "provider-callers.txt"  # the export job did not run
    inputs = tmp_path / "missing-export.yaml"
    inputs.write_text(f"callers_file: {missing}\n", encoding="utf-8")
    code, report = run_json(cairn, wl, "-e", f"@{inputs}", "--phase", "detect")
    assert code == 2, report
    host = report["hosts"][0]
    assert host["outcome"] == "failed"
    assert host["reason"].startswith("detect could not decide: callers_known: ")
    assert statuses(report, "detect") == {
        "callers_known": "error",
        "allow_list_in_use": "ok",
        "caller_rejections": "skipped",  # each `when` waits for a readable callers list
        "missing_entries": "skipped",
        "stale_entries": "skipped",
    }
    assert results(report, "detect")["callers_known"]["message"] == (
        f"exit code 2: cannot read the callers file {missing} (no such file, or not a file): check callers_file"
    )

    folder = Path(wl.inputs["allow_list"]).parent  # a directory where the allow list file is expected
    code, report = run_json(cairn, wl, "-e", f"allow_list={folder}", "--phase", "detect")
    assert code == 1, report  # the rejected caller is still seen from its own address
    detect = results(report, "detect")
    assert detect["allow_list_in_use"]["status"] == "error"
    assert detect["allow_list_in_use"]["message"] == (
        f"exit code 2: cannot read the allow list {folder} (no such file, or not a file): check allow_list"
    )
    assert detect["missing_entries"]["status"] == detect["stale_entries"]["status"] == "skipped"

    error_log = wl.inputs["nginx_error_log"]
    code, report = run_json(cairn, wl, "-e", f"access_log={error_log}", "--phase", "diagnose")
    assert code == 1, report
    assert statuses(report, "detect")["stale_entries"] == "finding"
    use = results(report, "diagnose")["stale_entry_use"]
    assert use["status"] == "error"
    assert re.fullmatch(
        rf"exit code 2: access_log {re.escape(error_log)}: none of its \d+ lines is in the combined log format",
        use["message"],
    ), use["message"]
