"""A corpus of distinct, valid, realistically sized runbooks for the validation benchmarks.

Each runbook follows the shape of ``runbooks/branch-cleanup.yaml`` — knowledge
text, typed inputs, multi-line ``run`` templates with ``parse``/``expect``/``report``,
diagnose steps that loop over an earlier step's ``out``, remediations with a
``tradeoff`` — but ids, step ids, commands, inputs and step counts differ, so
every file is distinct and nearly every ``run``/``report``/``manual`` template too
(short expectations such as ``out | length == 0`` repeat, as they do in real
runbooks). No cache — ``expr.check``'s LRU, a cache keyed by file hash — can
make a pass trivial. Generation is deterministic: runbook ``i`` is the same on
every run.
"""

from __future__ import annotations

import random
from pathlib import Path


def _split(words: str) -> tuple[str, ...]:
    return tuple(words.split())


_WORDS = _split(
    "node kernel cgroup shim socket queue lock lease journal index segment replica shard "
    "snapshot volume mount inode cache buffer pool worker thread process daemon service "
    "timer cron backup branch release tag merge commit trunk pipeline artifact registry "
    "image layer container pod namespace quota limit request certificate token secret "
    "session handshake route gateway proxy resolver record zone disk partition filesystem "
    "stale orphaned leaked frozen superseded zombie dangling expired rotated throttled "
    "slowly silently eventually rarely after restart under load during upgrade on boot"
)
_AREAS = _split("git k8s etcd nginx postgres redis kafka systemd docker ceph dns tls cron nfs")
_NOUNS = _split("branches locks leases shims pods segments snapshots certs sessions timers volumes tags")
_VERBS = _split("find list count check scan measure collect probe inspect locate")
_COLUMN_POOL = _split("name path owner age_days size_kb state reason since host unit pid count holder")
_TOOLS = ("git -C", "find", "ls -1", "systemctl list-units --plain", "ss -tanp", "df -P", "journalctl -u")
_MODULES = ("ansible.builtin.file", "ansible.builtin.systemd_service", "ansible.builtin.cron")
_INPUTS = {  # name -> type; names get a per-runbook suffix now and then
    "repo": "string", "path": "string", "service": "string", "namespace": "string",
    "pattern": "string", "threshold": "integer", "retries": "integer", "port": "integer",
    "max_age": "duration", "window": "duration", "grace": "duration", "ratio": "number",
    "strict": "boolean", "include_system": "boolean",
}  # fmt: skip


def generate(folder: Path, count: int, seed: int = 20240601) -> list[Path]:
    """Write ``count`` distinct runbooks into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"rb-{index:04d}.yaml"
        path.write_text(runbook_text(index, random.Random(seed + index)), encoding="utf-8")
        paths.append(path)
    return paths


def runbook_text(index: int, rng: random.Random) -> str:
    """One runbook as YAML text; valid by construction."""
    builder = _Runbook(index, rng)
    return builder.text()


def _sentence(rng: random.Random, low: int = 8, high: int = 18) -> str:
    words = rng.choices(_WORDS, k=rng.randint(low, high))
    return words[0].capitalize() + " " + " ".join(words[1:]) + "."


def _paragraph(rng: random.Random, sentences: int, indent: str) -> str:
    text = " ".join(_sentence(rng) for _ in range(sentences))
    lines, line = [], ""
    for word in text.split():
        if len(line) + len(word) > 76:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(indent + ln for ln in lines)


class _Runbook:
    """Builds one runbook's text, keeping track of inputs and steps that later templates may use."""

    def __init__(self, index: int, rng: random.Random) -> None:
        self.index, self.rng = index, rng
        self.inputs: dict[str, str] = {}  # name -> type
        self.tables: list[tuple[str, list[str]]] = []  # detect/diagnose steps whose out is a table
        self.step_ids: set[str] = set()

    def text(self) -> str:
        rng, i = self.rng, self.index
        area, noun = rng.choice(_AREAS), rng.choice(_NOUNS)
        parts = [
            "# yaml-language-server: $schema=../engine/core/schema/runbook.schema.json",
            f"id: {area}-{noun}-{i:04d}",
            f"title: {area} {noun} left behind {rng.choice(_WORDS)} and {rng.choice(_WORDS)} ({i})",
            f"severity: {rng.choice(('info', 'warning', 'critical'))}",
            f"tags: [{area}, {noun}, t{i % 97}]",
            "summary: |\n" + _paragraph(rng, rng.randint(3, 6), "  "),
            "symptoms:\n" + "\n".join(f'  - "{_sentence(rng)}"' for _ in range(rng.randint(2, 5))),
            "cause: |\n" + "\n\n".join(_paragraph(rng, rng.randint(3, 5), "  ") for _ in range(rng.randint(1, 3))),
            "references:\n" + "\n".join(self._reference(k) for k in range(rng.randint(1, 5))),
            f"targets: {area}_servers",
            "inputs:\n" + self._inputs(),
            "detect:\n" + self._phase("detect", rng.randint(1, 5)),
        ]  # fmt: skip
        if rng.random() < 0.8:
            parts.append("diagnose:\n" + self._phase("diagnose", rng.randint(1, 3)))
        if rng.random() < 0.85:
            parts.append("remediate:\n" + self._phase("remediate", rng.randint(1, 3)))
        parts.append(
            "verify: detect" if rng.random() < 0.7 else "verify:\n" + self._phase("verify", rng.randint(1, 2))
        )
        return "\n".join(parts) + "\n"

    def _reference(self, k: int) -> str:
        title = _sentence(self.rng, 4, 9).rstrip(".")
        return f'  - title: "{title}"\n    url: https://docs.example.org/{self.index}/{k}/{self.rng.choice(_WORDS)}'

    def _inputs(self) -> str:
        rng, i = self.rng, self.index
        names = [rng.choice([n for n, kind in _INPUTS.items() if kind == "string"])]  # commands need a path
        names += [n for n in rng.sample(sorted(_INPUTS), rng.randint(1, 5)) if n not in names]
        lines = []
        for base in names:
            kind = _INPUTS[base]
            name = f"{base}_{i % 11}" if rng.random() < 0.3 else base
            self.inputs[name] = kind
            default = {
                "string": f'"/srv/{rng.choice(_WORDS)}{i}"',
                "integer": str(rng.randint(1, 500)),
                "duration": rng.choice(("7d", "90m", "45s", "2h", "1h30m")),
                "number": f"{rng.random():.2f}",
                "boolean": rng.choice(("true", "false")),
            }[kind]
            lines += [f"  {name}:", f"    type: {kind}", f"    default: {default}"]
            if kind == "integer" and rng.random() < 0.3:
                lines.append(f"    choices: [{default}, {int(default) + 1}, {int(default) * 2}]")
            lines.append(f"    description: {_sentence(rng, 6, 14)}")
        return "\n".join(lines)

    def _input(self, kind: str) -> str:
        names = [n for n, k in self.inputs.items() if k == kind]
        return self.rng.choice(names) if names else ""

    def _new_id(self) -> str:
        rng = self.rng
        while True:
            sid = f"{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}_{rng.choice(_WORDS)}"
            if sid not in self.step_ids:
                self.step_ids.add(sid)
                return sid

    def _phase(self, phase: str, count: int) -> str:
        steps = []
        for position in range(count):
            if phase == "remediate":
                steps.append(self._remediation())
            elif phase == "diagnose" and self.tables and position == 0:
                steps.append(self._loop_step())
            else:
                steps.append(self.rng.choice((self._table_step, self._table_step, self._count_step))())
        return "\n\n".join(steps)

    def _head(self, sid: str, *, when: str = "") -> list[str]:
        lines = [f"  - id: {sid}", f"    title: {_sentence(self.rng, 4, 10).rstrip('.')}"]
        if when:
            lines.append(f"    when: {when}")
        lines.append("    why: |\n" + _paragraph(self.rng, self.rng.randint(1, 4), "      "))
        return lines

    def _table_step(self) -> str:
        rng, sid = self.rng, self._new_id()
        columns = rng.sample(_COLUMN_POOL, rng.randint(2, 4))
        path, fields = self._input("string"), ' "|" '.join(f"${k + 1}" for k in range(len(columns)))
        limit = rng.randint(0, 9)
        shown = " ".join(f"{{{{ r.{c} }}}}" for c in columns[1:])
        lines = [
            *self._head(sid),
            "    run: |",
            f"      {rng.choice(_TOOLS)} {{{{ inputs.{path} }}}}/{rng.choice(_WORDS)}-{self.index} \\",
            f"        | grep -v '^#' | LC_ALL=C sort -k{rng.randint(1, 3)} \\",
            f"        | awk '{{ if (NR > {rng.randint(0, 5)}) print {fields} }}'",
            f'    parse:\n      table: {{columns: [{", ".join(columns)}], separator: "|"}}',
            f"    expect: out | length <= {limit}",
            "    report: >-",
            f"      {{% if out %}}{{{{ out | length }}}} {rng.choice(_NOUNS)} over {limit}: "
            f'{{% for r in out %}}{{{{ r.{columns[0]} }}}} ({shown}){{{{ ", " if not loop.last }}}}{{% endfor %}}'
            f"{{% else %}}no {rng.choice(_WORDS)} {rng.choice(_NOUNS)}{{% endif %}}",
            f"    timeout: {rng.randint(5, 120)}s",
        ]
        self.tables.append((sid, columns))
        return "\n".join(lines)

    def _count_step(self) -> str:
        rng, sid = self.rng, self._new_id()
        threshold = self._input("integer")
        bound = f"inputs.{threshold}" if threshold else str(rng.randint(1, 99))
        age = self._input("duration")
        extra = f" -mmin +{{{{ (inputs.{age} / 60) | int }}}}" if age else f" -mmin +{rng.randint(1, 600)}"
        lines = [
            *self._head(sid),
            f"    run: find {{{{ inputs.{self._input('string')} }}}} -name '*.{rng.choice(_WORDS)}{self.index}'{extra} | wc -l",
            "    parse: number",
            f"    expect: out <= {bound}",
            f"    report: \"{{{{ out }}}} {rng.choice(_NOUNS)} (limit {{{{ {bound} }}}})\"",
        ]  # fmt: skip
        return "\n".join(lines)

    def _loop_step(self) -> str:
        rng = self.rng
        source, columns = rng.choice(self.tables)
        sid = self._new_id()
        lines = [
            *self._head(sid, when=f"steps.{source}.finding"),
            "    run: |",
            f"      inspect_{self.index}() {{",
            f'        {rng.choice(_TOOLS)} "$1" | grep -c {rng.choice(_WORDS)} || true',
            "      }",
            f"      {{% for row in steps.{source}.out %}}",
            f"      echo {{{{ row.{columns[0]} }}}}\"|\"$(inspect_{self.index} {{{{ row.{columns[-1]} }}}})",
            "      {% endfor %}",
            "    parse:\n      table: {columns: [item, hits], separator: \"|\"}",
            "    expect: out | length == 0",
            "    report: >-",
            f"      {{{{ out | length }}}} of {{{{ steps.{source}.out | length }}}} {rng.choice(_NOUNS)} still hit",
            f"    timeout: {rng.randint(1, 5)}m",
        ]  # fmt: skip
        self.tables.append((sid, ["item", "hits"]))
        return "\n".join(lines)

    def _remediation(self) -> str:
        rng = self.rng
        if not self.tables:
            return self._manual(None)
        source, columns = rng.choice(self.tables)
        kind = rng.random()
        if kind < 0.25:
            return self._manual((source, columns))
        sid = self._new_id()
        lines = self._head(sid, when=f"steps.{source}.finding")
        if kind < 0.4:
            lines += [
                "    ansible:",
                f"      module: {rng.choice(_MODULES)}",
                "      args:",
                f"        name: \"{{{{ steps.{source}.out | map(attribute='{columns[0]}') | join(',') }}}}\"",
                f'        path: "{{{{ inputs.{self._input("string")} }}}}/{rng.choice(_WORDS)}{self.index}"',
                "        state: absent",
            ]
        else:
            lines.append(
                f"    run: {rng.choice(_TOOLS)} {{{{ inputs.{self._input('string')} }}}} --remove-{self.index} "
                f"{{{{ steps.{source}.out | map(attribute='{columns[0]}') | list }}}}"
            )
            lines.append(f"    timeout: {rng.randint(1, 10)}m")
        lines.append("    tradeoff: |\n" + _paragraph(rng, rng.randint(1, 3), "      "))
        return "\n".join(lines)

    def _manual(self, table: tuple[str, list[str]] | None) -> str:
        rng, sid = self.rng, self._new_id()
        lines = self._head(sid, when=f"steps.{table[0]}.finding" if table else "")
        lines.append("    manual: |\n" + _paragraph(rng, 2, "      "))
        if table:
            lines += [
                "",
                f"      {{% for r in steps.{table[0]}.out %}}",
                f"      - `{{{{ r.{table[1][0]} }}}}` on {{{{ target }}}} ({self.index})",
                "      {% endfor %}",
            ]
        lines.append(f"    tradeoff: {_sentence(rng, 6, 12)}")
        return "\n".join(lines)
