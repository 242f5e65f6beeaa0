"""Loading a whole library: the same answer in-process and in parallel worker processes."""

from __future__ import annotations

from pathlib import Path

from engine.core.loader import PARALLEL_FROM, load_library
from tests.conftest import FIXTURES


def _many(folder: Path) -> int:
    """Copies of the fixture runbooks under distinct ids, plus invalid files and one duplicate id."""
    folder.mkdir()
    count = 0
    sources = sorted((FIXTURES / "runbooks" / "valid").glob("*.yaml")) + sorted(
        (FIXTURES / "runbooks" / "invalid").glob("*.yaml")
    )
    while count < PARALLEL_FROM + 10:
        for source in sources:
            text = source.read_text(encoding="utf-8")
            if "playbook:" in text:
                continue  # its playbook lives next to the original only
            text = text.replace("\nid: ", f"\nid: copy{count}-", 1) if "\nid: " in text else text
            (folder / f"{count:03d}-{source.name}").write_text(text, encoding="utf-8")
            count += 1
    (folder / "zzz-duplicate.yaml").write_text(
        (folder / "000-01_minimal.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    return count + 1


def test_parallel_loading_gives_the_same_library(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    total = _many(folder)
    serial = load_library([folder], jobs=1)
    parallel = load_library([folder], jobs=2)
    assert len(serial.results) == total
    assert parallel.results == serial.results  # same runbooks, same problems, same order
    assert serial.invalid and serial.runbooks
    duplicate = next(r for r in parallel.results if r.path.endswith("zzz-duplicate.yaml"))
    assert "already used by" in duplicate.problems[0].message
