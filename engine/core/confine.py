"""Files a runbook names stay inside its folder.

A runbook may name files beside it (an ``ansible`` step's playbook). Whoever can change a
runbook must not be able to make Cairn read, run or publish a file elsewhere on the machine
through it: ``../x.yml``, an absolute path, or a symlink that leads out (``/etc/shadow``).
:func:`inside` resolves a name the way the file system will (symlinks followed, ``..``
taken) and refuses anything that does not end up inside the folder. The loader (through
:mod:`engine.core.semantics`), the ansible executor and ``cairn docs build`` all ask it,
so a runbook that names such a file does not load, does not run and is not copied.
"""

from __future__ import annotations

import os
from pathlib import Path


class OutsideFolder(ValueError):
    """A file a runbook names resolves outside the runbook's folder; ``str()`` says why."""


def inside(folder: Path | str, name: str) -> Path:
    """``name`` (relative to ``folder``) resolved, symlinks followed; :class:`OutsideFolder` if it
    leaves ``folder``. The file need not exist (the caller says what it expected)."""
    if not name or "\x00" in name:
        raise OutsideFolder(f"{name!r} is not a file name")
    if os.path.isabs(name):
        raise OutsideFolder(f"{name!r} is an absolute path: name a file inside the runbook's folder")
    base = Path(folder).resolve()
    target = (base / name).resolve()  # strict=False: a missing file still resolves its symlinks
    if target != base and base not in target.parents:
        via = "through a symlink " if ".." not in Path(name).parts else ""
        raise OutsideFolder(
            f"{name!r} leads {via}outside the runbook's folder (to {target}): "
            "files a runbook names must be inside its folder"
        )
    return target
