"""platform-adoption end to end: the real `cairn lab` and `cairn run` on a platform inventory read by ansible-inventory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from engine.lab import adoption
from tests.conftest import REPO, CairnRunner, LabStarter
from tests.runbooks.reports import report_of, results, statuses

pytestmark = [pytest.mark.lab, pytest.mark.cli, pytest.mark.ansible]

CHECKLIST = (
    "provide_one_click_migration",
    "name_migration_champions",
    "migrate_first_app_side_by_side",
    "retire_old_deploy_path",
)


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_detect_finds_the_labs_stalled_migration_and_yes_leaves_the_checklist_to_humans(
    cairn: CairnRunner, lab: LabStarter
) -> None:
    lab_up = lab("platform-adoption")
    platform = Path(lab_up.inputs["inventory"])
    before = folder_digest(platform)
    done = cairn(*lab_up.run_args("--yes", "--json"))
    assert done.returncode == 1, done.stdout + done.stderr  # still present: nobody did the checklist
    report = json.loads(done.stdout)
    host = report["hosts"][0]
    assert host["outcome"] == "present"
    assert host["reason"] == (
        "found by apps_only_on_old_platform, apps_side_by_side_too_long, teams_without_champion; "
        "not remediated: 4 step(s) not asked (a manual step needs a human to do it; --yes approves commands only)"
    )

    detect = results(report, "detect")
    assert {k: v["status"] for k, v in detect.items()} == {
        "apps_only_on_old_platform": "finding",
        "apps_side_by_side_too_long": "finding",
        "teams_without_champion": "finding",
    }
    assert detect["apps_only_on_old_platform"]["message"] == (
        "3 of 7 apps only on old_platform: invoice-worker (payments, java-tomcat on vm-legacy-01), "
        "report-builder (reporting, php-fpm on vm-legacy-02), search-indexer (search, python-uwsgi on vm-legacy-02)"
    )
    # login-service has been side by side for 10 days: within the 30-day limit, not a finding.
    assert detect["apps_side_by_side_too_long"]["message"] == (
        "1 of 2 apps on both platforms longer than 30 days: billing-api (payments, 75 days)"
    )
    assert detect["teams_without_champion"]["message"] == (
        "2 teams with apps on old_platform and no migration champion: payments (2 apps), reporting (1 app)"
    )
    # What ansible-inventory resolved: child groups of old_platform count, champions come from group_vars.
    apps = {a["app"]: a for a in detect["apps_only_on_old_platform"]["out"]}
    assert sorted(apps) == [
        "accounts-ui",
        "billing-api",
        "invoice-worker",
        "login-service",
        "report-builder",
        "search-api",
        "search-indexer",
    ]
    assert tuple(sorted(name for name, a in apps.items() if not a["new"])) == adoption.ONLY_OLD
    assert apps["billing-api"] == {
        "app": "billing-api",
        "team": "payments",
        "kind": "java-tomcat",
        "old": ["vm-legacy-01"],
        "new": ["k8s-prod"],
        "days_on_new": 75,
        "champion": "",
    }
    assert apps["login-service"]["champion"] == "Tomás Ruiz"
    progress = results(report, "diagnose")["migration_progress_by_team"]
    assert progress["status"] == "ok"
    assert progress["message"].startswith(
        "identity: 1/2 apps moved, 1 side by side, 0 not started, champion Tomás Ruiz; "
        "payments: 0/2 apps moved, 1 side by side, 1 not started, champion none;"
    )

    # --yes approves commands but never pretends a human did a manual step: the checklist is skipped.
    remediate = results(report, "remediate")
    assert list(remediate) == list(CHECKLIST)
    for step in remediate.values():
        assert step["status"] == "not_asked"
        assert (
            step["message"] == "not asked: a manual step needs a human to do it; --yes approves commands only"
        )
    assert results(report, "verify") == {}
    # The instructions a human would have followed name this lab's apps and teams.
    assert (
        "- `java-tomcat`: invoice-worker\n- `php-fpm`: report-builder\n" in remediate[CHECKLIST[0]]["command"]
    )
    assert (
        "- payments: billing-api, invoice-worker\n- reporting: report-builder\n"
        in remediate[CHECKLIST[1]]["command"]
    )
    assert "- search (champion: Priya Natarajan): search-indexer" in remediate[CHECKLIST[2]]["command"]
    assert (
        "- billing-api (payments): 75 days on k8s-prod; still on vm-legacy-01"
        in remediate[CHECKLIST[3]]["command"]
    )
    assert folder_digest(platform) == before


def test_naming_champions_clears_only_that_finding(cairn: CairnRunner, lab: LabStarter) -> None:
    """A team lead records the champions in group_vars: that check passes, the apps still have to move."""
    lab_up = lab("platform-adoption")
    champions_file = Path(lab_up.inputs["inventory"]) / "group_vars" / "all.yml"
    champions = yaml.safe_load(champions_file.read_text(encoding="utf-8"))
    champions["migration_champions"] |= {"payments": "Dana Li", "reporting": "Jonas Weber"}
    champions_file.write_text(yaml.safe_dump(champions, allow_unicode=True), encoding="utf-8")
    done = cairn(*lab_up.run_args("--phase", "detect", "--json"))
    assert done.returncode == 1, done.stdout + done.stderr
    detect = results(json.loads(done.stdout), "detect")
    assert {k: v["status"] for k, v in detect.items()} == {
        "apps_only_on_old_platform": "finding",
        "apps_side_by_side_too_long": "finding",
        "teams_without_champion": "ok",
    }
    assert detect["teams_without_champion"]["message"] == (
        "every team with apps on old_platform has a migration champion"
    )


def test_finished_migration_is_healthy(cairn: CairnRunner, lab: LabStarter) -> None:
    lab_up = lab("platform-adoption", healthy=True)
    done = cairn(*lab_up.run_args("--yes", "--json"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["hosts"][0]["outcome"] == "healthy"
    assert {k: (v["status"], v["message"]) for k, v in results(report, "detect").items()} == {
        "apps_only_on_old_platform": ("ok", "all 7 apps run on k8s_platform"),
        "apps_side_by_side_too_long": ("ok", "no app runs on both platforms"),
        "teams_without_champion": ("ok", "no team has apps left on old_platform"),
    }
    assert results(report, "remediate") == {}


def test_a_wrong_group_fails_loudly_and_stays_an_argument(
    cairn: CairnRunner, lab: LabStarter, tmp_path: Path
) -> None:
    """A typo in a group name must not look like a finished migration; a hostile one is never run."""
    lab_up = lab("platform-adoption")
    done = cairn(
        *lab_up.run_args("-e", "old_group=legacy;touch${IFS}owned", "--phase", "detect"), cwd=tmp_path
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert (
        "detect could not decide: apps_only_on_old_platform: exit code 1: group legacy;touch${IFS}owned"
        in done.stdout
    )
    assert "is not in the inventory; its groups: all, k8s_platform, old_platform, script_vms," in done.stdout
    assert not (tmp_path / "owned").exists()


def test_show_markdown_contains_the_checklist(cairn: CairnRunner) -> None:
    done = cairn("show", "platform-adoption", "--markdown", cwd=REPO)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    remediate = text[text.index("## Remediate") : text.index("## Verify")]
    for number, (step_id, title) in enumerate(
        zip(
            CHECKLIST,
            (
                "Provide a one-click migration for each kind of app still on the old platform",
                "Name one migration champion in every team that has not moved",
                "Migrate each team's first app side by side on both platforms",
                "Retire the old deploy path of apps side by side past the limit",
            ),
            strict=True,
        ),
        start=1,
    ):
        assert f"{number}. **{title}** (`{step_id}`, manual)" in remediate
    assert remediate.count("*Trade-off:*") == len(CHECKLIST)
    assert "https://teamtopologies.com/key-concepts" in text


def test_an_inventory_file_that_cannot_be_read_is_an_error_not_a_finished_migration(
    cairn: CairnRunner, lab: LabStarter, tmp_path: Path
) -> None:
    """The old platform's hosts live in their own file, and that file is gone (a link to an unmounted share).

    ansible-inventory only warns about a source it cannot parse and lists the rest: the old
    platform's group, declared in hosts.yml, came back empty, and every check said the migration
    was over ("all 4 apps run on k8s_platform"): a healthy host, exit 0.
    """
    lab_up = lab("platform-adoption")
    platform = Path(lab_up.inputs["inventory"])
    hosts = yaml.safe_load((platform / "hosts.yml").read_text(encoding="utf-8"))
    old_platform = hosts["all"]["children"]["old_platform"]
    (platform / "old-vms.yml").write_text(
        yaml.safe_dump({"all": {"children": old_platform["children"]}}, allow_unicode=True), encoding="utf-8"
    )
    old_platform["children"] = {group: {} for group in old_platform["children"]}
    (platform / "hosts.yml").write_text(yaml.safe_dump(hosts, allow_unicode=True), encoding="utf-8")
    # Split over two files, the inventory still says what the lab's says.
    done = cairn(*lab_up.run_args("--phase", "detect", "--json"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert set(statuses(report_of(done), "detect").values()) == {"finding"}

    (platform / "old-vms.yml").unlink()
    (platform / "old-vms.yml").symlink_to(tmp_path / "mnt" / "platform-share" / "old-vms.yml")
    done = cairn(*lab_up.run_args("--yes", "--json"))
    assert done.returncode == 2, done.stdout + done.stderr
    report = report_of(done)
    host = report["hosts"][0]
    assert host["outcome"] == "failed"
    assert host["reason"].startswith("detect could not decide: apps_only_on_old_platform: ")
    detect = results(report, "detect")
    assert {k: v["status"] for k, v in detect.items()} == {
        "apps_only_on_old_platform": "error",
        "apps_side_by_side_too_long": "skipped",  # `when` waits for the shared query to have worked
        "teams_without_champion": "skipped",
    }
    assert detect["apps_only_on_old_platform"]["message"] == (
        f"exit code 2: [ERROR]: Completely failed to parse inventory source {platform / 'old-vms.yml'}"
    )
    assert [r["phase"] for r in host["results"]] == ["detect"] * 3


def test_an_inventory_whose_hosts_list_no_app_is_an_error(
    cairn: CairnRunner, lab: LabStarter, tmp_path: Path
) -> None:
    """The groups exist but no host has an `apps` variable (another inventory, or host_vars left behind):
    "all 0 apps run on k8s_platform" was an ok, and the run was healthy."""
    lab_up = lab("platform-adoption")
    elsewhere = tmp_path / "fleet.yml"
    elsewhere.write_text(
        "all:\n  children:\n"
        "    old_platform:\n      hosts:\n        vm-legacy-01: {}\n"
        "    k8s_platform:\n      hosts:\n        k8s-prod: {}\n",
        encoding="utf-8",
    )
    done = cairn(*lab_up.run_args("-e", f"inventory={elsewhere}", "--phase", "detect", "--json"))
    assert done.returncode == 2, done.stdout + done.stderr
    report = report_of(done)
    assert report["hosts"][0]["outcome"] == "failed"
    check = results(report, "detect")["apps_only_on_old_platform"]
    assert check["status"] == "error"
    assert check["message"] == (
        "exit code 1: no host of old_platform or k8s_platform lists an app in its apps variable: "
        "check the inventory input"
    )
