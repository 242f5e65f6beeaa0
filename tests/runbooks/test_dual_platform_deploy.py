"""dual-platform-deploy end to end on its lab: a real nginx splitting traffic between two platforms."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import CairnRunner, Lab, LabStarter
from tests.runbooks.reports import report_of, results, statuses

pytestmark = [pytest.mark.lab, pytest.mark.cli, pytest.mark.nginx]

RUNBOOK = "dual-platform-deploy"


def served_by(lab: Lab, requests: int = 100) -> dict[str, int]:
    """Send requests through the lab's front nginx; count the answers by the platform that served them."""
    counts: dict[str, int] = {}
    for _ in range(requests):
        try:
            with urllib.request.urlopen(lab.inputs["front_url"], timeout=10) as answer:
                platform = answer.headers.get("X-Platform", "none")
        except urllib.error.HTTPError as exc:  # a failing backend still names itself
            platform = exc.headers.get("X-Platform", "none")
        counts[platform] = counts.get(platform, 0) + 1
    return counts


def version_of(lab: Lab, server: str) -> str:
    request = urllib.request.Request(f"http://{server}/version", headers={"Host": lab.inputs["version_host"]})
    with urllib.request.urlopen(request, timeout=10) as answer:
        version: str = json.load(answer)["version"]
    return version


def servers(lab: Lab) -> tuple[str, str]:
    """(old, k8s) server addresses of the lab's upstream."""
    k8s = lab.inputs["k8s_servers"]
    text = Path(lab.inputs["upstream_file"]).read_text(encoding="utf-8")
    addresses = [line.split()[1] for line in text.splitlines() if line.strip().startswith("server ")]
    (old,) = [a for a in addresses if a != k8s]
    return old, k8s


def test_detect_reports_drift_and_weights_and_diagnose_the_failing_upstream(
    cairn: CairnRunner, lab: LabStarter
) -> None:
    lb = lab(RUNBOOK)
    old, k8s = servers(lb)
    done = cairn(*lb.run_args("--dry-run", "--json"))
    assert done.returncode == 1, done.stdout + done.stderr
    report = report_of(done)
    assert report["hosts"][0]["outcome"] == "present"
    detect = results(report, "detect")
    assert statuses(report, "detect") == {
        "upstream_weights": "finding",
        "observed_split": "ok",
        "platform_versions": "finding",
    }
    weights = detect["upstream_weights"]["out"]
    assert weights["k8s_percent"] == 10.0
    assert [(s["server"], s["platform"], s["weight"]) for s in weights["servers"]] == [
        (old, "old", 90),
        (k8s, "k8s", 10),
    ]
    assert detect["upstream_weights"]["message"] == (
        f"Kubernetes gets 10.0 % of requests (target 50 %): old {old} weight 90, k8s {k8s} weight 10"
    )
    # Weighted round robin is exact: 100 requests at 90/10 are 90/10.
    split = detect["observed_split"]["out"]
    assert (split["requests"], split["k8s"], split["other"], split["unattributed"]) == (100, 10, 90, 0)
    versions = detect["platform_versions"]["out"]
    assert versions["newest"] == "2.3.1"
    assert versions["lagging"] == ["k8s"]
    assert detect["platform_versions"]["message"] == (
        "old serves 2.3.1; k8s serves 2.3.0 — k8s lags behind 2.3.1: a release reached one platform only"
    )

    diagnose = results(report, "diagnose")
    health = {r["platform"]: r for r in diagnose["upstream_health"]["out"]}
    assert diagnose["upstream_health"]["status"] == "finding"
    assert health["old"]["server"] == old
    assert health["old"]["errors"] == "0"
    assert health["k8s"]["server"] == k8s
    # The lab's warm-up sent /checkout to k8s 4 times; release 2.3.0 fails it.
    assert health["k8s"]["errors"] == "4"
    assert float(health["k8s"]["error_percent"]) > 1
    failing = diagnose["failing_requests"]["out"]
    assert [(r["count"], r["platform"], r["status"], r["request"]) for r in failing] == [
        ("4", "k8s", "500", "GET /checkout HTTP/1.1")
    ]

    # The dry run shows the exact remediation commands and runs none of them.
    remediate = results(report, "remediate")
    assert statuses(report, "remediate") == {
        "deploy_release": "skipped",
        "deploy_by_hand": "skipped",
        "shift_weights": "skipped",
        "switch_dns": "skipped",
    }
    assert remediate["deploy_release"]["message"] == "dry run: not run"
    assert (
        f'{lb.inputs["deploy_command"]} "$platform" "$release" >&2' in remediate["deploy_release"]["command"]
    )
    assert "for platform in k8s; do" in remediate["deploy_release"]["command"]
    assert remediate["shift_weights"]["message"] == "dry run: not run"
    nginx = f"nginx=({lb.inputs['nginx_bin']} -c {lb.inputs['nginx_conf']} -e {lb.inputs['nginx_error_log']})"
    assert nginx in remediate["shift_weights"]["command"]
    assert version_of(lb, k8s) == "2.3.0"


def test_yes_deploys_the_release_shifts_the_weight_in_gated_steps_and_verifies(
    cairn: CairnRunner, lab: LabStarter
) -> None:
    lb = lab(RUNBOOK)
    old, k8s = servers(lb)
    upstream = Path(lb.inputs["upstream_file"])
    original = upstream.read_text(encoding="utf-8")

    done = cairn(*lb.run_args("--yes", "--json"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = report_of(done)
    assert report["hosts"][0]["outcome"] == "remediated"
    remediate = results(report, "remediate")
    assert statuses(report, "remediate") == {
        "deploy_release": "ok",
        "deploy_by_hand": "skipped",
        "shift_weights": "ok",
        "switch_dns": "skipped",  # only at a 100 % target
    }
    assert remediate["deploy_release"]["out"] == [f"{k8s} reports 2.3.1"]
    shift = remediate["shift_weights"]["out"]
    assert (shift["from"], shift["reached"], shift["rolled_back"], shift["failure"]) == (10, 50, False, "")
    assert [(s["k8s_percent"], s["gate"]) for s in shift["steps"]] == [(30, "passed"), (50, "passed")]
    assert [s["errors"] for s in shift["steps"]] == [0, 0]
    assert all(s["attempts"] > 0 for s in shift["steps"])
    assert remediate["shift_weights"]["message"].startswith(
        "Kubernetes share 10 % → 30 % → 50 %, every gate passed"
    )
    assert statuses(report, "verify") == {
        "upstream_weights": "ok",
        "observed_split": "ok",
        "platform_versions": "ok",
    }
    assert results(report, "verify")["observed_split"]["out"]["k8s"] == 50  # of 100

    # The real state changed: the file, what nginx serves, what k8s runs; the original is kept.
    text = upstream.read_text(encoding="utf-8")
    assert f"server {old} weight=50;  # old platform" in text
    assert f"server {k8s} weight=50;  # Kubernetes Ingress" in text
    assert served_by(lb) == {"old": 50, "k8s": 50}
    assert version_of(lb, k8s) == "2.3.1"
    backup = Path(shift["backup"])
    assert backup.parent == upstream.parent and backup.name.startswith(".")
    assert backup.read_text(encoding="utf-8") == original
    assert sorted(p.name for p in upstream.parent.iterdir()) == sorted([upstream.name, backup.name])

    again = cairn(*lb.run_args("--phase", "detect", "--json"))
    assert again.returncode == 0, again.stdout + again.stderr
    report = report_of(again)
    assert report["hosts"][0]["outcome"] == "healthy"
    assert set(statuses(report, "detect").values()) == {"ok"}


def test_healthy_lab_is_healthy_and_nothing_changes(cairn: CairnRunner, lab: LabStarter) -> None:
    lb = lab(RUNBOOK, healthy=True)
    upstream = Path(lb.inputs["upstream_file"])
    before = upstream.read_text(encoding="utf-8")
    done = cairn(*lb.run_args("--yes", "--json"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = report_of(done)
    assert report["hosts"][0]["outcome"] == "healthy"
    assert statuses(report, "detect") == {
        "upstream_weights": "ok",
        "observed_split": "ok",
        "platform_versions": "ok",
    }
    assert results(report, "detect")["platform_versions"]["message"] == "old serves 2.3.1; k8s serves 2.3.1"
    assert not results(report, "remediate")
    assert upstream.read_text(encoding="utf-8") == before
    assert sorted(p.name for p in upstream.parent.iterdir()) == [upstream.name]


def test_a_failing_health_gate_rolls_back_to_the_previous_weights(
    cairn: CairnRunner, lab: LabStarter
) -> None:
    lb = lab(RUNBOOK)
    old, k8s = servers(lb)
    upstream = Path(lb.inputs["upstream_file"])
    original = upstream.read_text(encoding="utf-8")
    (Path(lb.info["dir"]) / "k8s" / "FAIL").touch()  # the k8s release now answers 503

    done = cairn(*lb.run_args("--yes", "--json"))
    assert done.returncode == 2, done.stdout + done.stderr
    report = report_of(done)
    assert report["hosts"][0]["outcome"] == "failed"
    remediate = results(report, "remediate")
    assert remediate["deploy_release"]["status"] == "ok"
    shift = remediate["shift_weights"]
    assert shift["status"] == "error"
    assert shift["out"]["rolled_back"] is True
    assert shift["out"]["reached"] == 10
    attempts = shift["out"]["steps"][0]["attempts"]
    assert attempts > 0
    assert shift["message"].startswith(
        f"health gate failed at 30 %: {attempts} of {attempts} Kubernetes attempts failed (100.0 %, limit 1 %); "
        "rolled back to the previous weights (10 %) and reloaded"
    )
    assert remediate["switch_dns"]["status"] == "not_run"  # shift_weights failed before it
    assert "shift_weights: health gate failed at 30 %" in report["hosts"][0]["reason"]

    # Safe: the file is as it was and nginx serves the previous split again (k8s still fails, but gets 10 %).
    assert upstream.read_text(encoding="utf-8") == original
    assert served_by(lb) == {"old": 90, "k8s": 10}
    verify = results(report, "verify")
    assert verify["upstream_weights"]["status"] == "finding"
    weights = [(s["server"], s["weight"]) for s in verify["upstream_weights"]["out"]["servers"]]
    assert weights == [(old, 90), (k8s, 10)]
    assert verify["observed_split"]["out"]["k8s"] == 10  # of 100


def test_nginx_t_failure_leaves_file_and_nginx_as_they_were(cairn: CairnRunner, lab: LabStarter) -> None:
    lb = lab(RUNBOOK)
    upstream = Path(lb.inputs["upstream_file"])
    original = upstream.read_text(encoding="utf-8")
    conf = Path(lb.inputs["nginx_conf"])
    broken = conf.with_name("broken.conf")  # what a colleague's unfinished edit looks like to nginx -t
    broken.write_text(conf.read_text(encoding="utf-8") + "\nthis_is_not_a_directive on;\n", encoding="utf-8")

    done = cairn(*lb.run_args("--yes", "--json", "-e", f"nginx_conf={broken}"))
    assert done.returncode == 2, done.stdout + done.stderr
    shift = results(report_of(done), "remediate")["shift_weights"]
    assert shift["status"] == "error"
    assert shift["message"].startswith("nginx -t rejected the weights for 30 % (")
    assert 'unknown directive "this_is_not_a_directive"' in shift["message"]
    assert "the file is back at 10 %, nginx was not reloaded" in shift["message"]
    assert upstream.read_text(encoding="utf-8") == original
    assert served_by(lb) == {"old": 90, "k8s": 10}


def test_without_a_deploy_command_the_weights_wait_for_a_human(cairn: CairnRunner, lab: LabStarter) -> None:
    lb = lab(RUNBOOK)
    old, k8s = servers(lb)
    upstream = Path(lb.inputs["upstream_file"])
    original = upstream.read_text(encoding="utf-8")

    # --yes never pretends a human deployed: the shift does not move users onto the stale release.
    done = cairn(*lb.run_args("--yes", "--json", "-e", "deploy_command="))
    assert done.returncode == 1, done.stdout + done.stderr
    report = report_of(done)
    assert report["hosts"][0]["outcome"] == "present"
    remediate = results(report, "remediate")
    assert statuses(report, "remediate") == {
        "deploy_release": "skipped",
        "deploy_by_hand": "not_asked",
        "shift_weights": "skipped",
        "switch_dns": "skipped",
    }
    manual = remediate["deploy_by_hand"]["command"]
    assert manual.startswith("Deploy release **2.3.1** to the\nk8s platform with its own pipeline.")
    assert f"- `{k8s}` (k8s) serves 2.3.0" in manual
    assert remediate["shift_weights"]["message"].startswith("when is false:")
    assert upstream.read_text(encoding="utf-8") == original
    assert version_of(lb, k8s) == "2.3.0"
    assert version_of(lb, old) == "2.3.1"


def test_what_the_answers_do_not_say_is_an_error_not_a_drift_to_fix(
    cairn: CairnRunner, lab: LabStarter, tmp_path: Path
) -> None:
    """On the healthy lab: the platform header is not in the answers, then the version endpoint is not there.

    Both used to be findings that --yes acted on: no answer carrying the header read as "0 % on
    Kubernetes: nginx is not serving the file", and the weights were rewritten and nginx
    reloaded; the catch-all page answering a missing /version path ("shop 2.3.1 on old") was
    taken for a release, so "shop2.3.1onold" was deployed to Kubernetes.
    """
    lb = lab(RUNBOOK, healthy=True)
    old, k8s = servers(lb)
    upstream = Path(lb.inputs["upstream_file"])
    before = upstream.read_text(encoding="utf-8")
    wrong_header = tmp_path / "wrong-header.yaml"
    wrong_header.write_text("platform_header: X-Served-By\n", encoding="utf-8")

    done = cairn(*lb.run_args("-e", f"@{wrong_header}", "--yes", "--json"))
    assert done.returncode == 2, done.stdout + done.stderr
    report = report_of(done)
    host = report["hosts"][0]
    assert host["outcome"] == "failed"
    assert host["reason"].startswith("detect could not decide: observed_split: ")
    assert statuses(report, "detect") == {
        "upstream_weights": "ok",
        "observed_split": "error",
        "platform_versions": "ok",
    }
    assert results(report, "detect")["observed_split"]["message"] == (
        f"exit code 2: none of the 100 answers from {lb.inputs['front_url']} named its platform in the "
        "X-Served-By header (0 failed): check front_url and platform_header"
    )
    assert not results(report, "remediate")
    assert upstream.read_text(encoding="utf-8") == before
    assert sorted(p.name for p in upstream.parent.iterdir()) == [
        upstream.name
    ]  # no backup: nothing rewritten

    done = cairn(*lb.run_args("-e", "version_path=/release", "--yes", "--json"))
    assert done.returncode == 2, done.stdout + done.stderr
    report = report_of(done)
    assert report["hosts"][0]["outcome"] == "failed"
    assert statuses(report, "detect") == {
        "upstream_weights": "ok",
        "observed_split": "ok",
        "platform_versions": "error",
    }
    assert results(report, "detect")["platform_versions"]["message"] == (
        f"exit code 2: {old} answered no readable release: shop 2.3.1 on old"
    )
    assert not results(report, "remediate")
    assert version_of(lb, old) == version_of(lb, k8s) == "2.3.1"  # nothing was deployed
