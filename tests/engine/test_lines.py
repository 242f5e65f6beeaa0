"""LineSplitter: output as complete lines, an endless line in bounded pieces, a secret never split."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest

from engine.core.inputs import Redactor
from engine.core.lines import LineSplitter


class Events:
    """What a LineSplitter emitted, redacted one event at a time (as the step runner does)."""

    def __init__(self, redact: Callable[[str], str] | None = None) -> None:
        self.redact = redact or (lambda text: text)
        self.events: list[tuple[str, str]] = []

    def __call__(self, stream: str, text: str) -> None:
        self.events.append((stream, self.redact(text)))

    def text(self, stream: str = "stdout") -> str:
        return "".join(text for name, text in self.events if name == stream)


def feed_in_chunks(splitter: LineSplitter, text: str, size: int, stream: str = "stdout") -> None:
    for start in range(0, len(text), size):
        splitter.feed(stream, text[start : start + size])


def test_complete_lines_go_at_once_and_the_unfinished_one_at_flush() -> None:
    events = Events()
    lines = LineSplitter(events)

    lines.feed("stdout", "one\ntw")
    lines.feed("stdout", "o\nthr")
    assert events.events == [("stdout", "one\n"), ("stdout", "two\n")]
    lines.flush()
    assert events.events[-1] == ("stdout", "thr")


def test_streams_are_kept_apart() -> None:
    events = Events()
    lines = LineSplitter(events)

    lines.feed("stdout", "out")
    lines.feed("stderr", "err\n")
    lines.feed("stdout", " more\n")

    assert events.events == [("stderr", "err\n"), ("stdout", "out more\n")]


def test_an_endless_line_goes_out_in_pieces_with_bounded_memory() -> None:
    # 20 MB on one line, read 64 KiB at a time. The unfinished line used to be copied on every read
    # (quadratic: 200 MB took 295 s through `cairn run`) and held whole until the command ended.
    events = Events()
    lines = LineSplitter(lambda stream, text: events.events.append((stream, str(len(text)))))
    chunk = "x" * 65536
    total = 20 * 1024 * 1024

    tracemalloc.start()
    try:
        for _ in range(total // len(chunk)):
            lines.feed("stdout", chunk)
        lines.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    sizes = [int(size) for _, size in events.events]
    assert sum(sizes) == total  # nothing lost, nothing twice
    assert len(sizes) > 1  # emitted while the line went on, not all at the end
    assert peak < 4 * 1024 * 1024, f"peak {peak:,} bytes while splitting a {total:,}-character line"


SECRET = "s3cr3t-" + "k" * 10


@pytest.mark.parametrize("offset", [*range(-20, 4), 500])
@pytest.mark.parametrize("chunk", [7, 4096])
def test_a_secret_in_an_endless_line_is_never_split_between_two_pieces(offset: int, chunk: int) -> None:
    redact = Redactor([SECRET])
    events = Events(redact)
    lines = LineSplitter(events, redact=redact, piece=1024)
    text = "x" * (1024 + offset) + SECRET + "y" * 3000 + SECRET + "z" * 2500

    feed_in_chunks(lines, text, chunk)
    lines.flush()

    assert len(events.events) > 1  # cut inside the line, not only at its end
    assert events.text() == "x" * (1024 + offset) + "***" + "y" * 3000 + "***" + "z" * 2500


def test_a_secret_with_newlines_is_not_split_at_a_line_end() -> None:
    # A private key as a secret input: the command prints it, line by line. Split into line events,
    # each redacted alone, every line of it reached the journal and the terminal.
    key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----"
    redact = Redactor([key])
    events = Events(redact)
    lines = LineSplitter(events, redact=redact)
    text = f"before\nkey: {key}\nafter\n"

    feed_in_chunks(lines, text, 5)
    lines.flush()

    assert events.text() == "before\nkey: ***\nafter\n"
    assert "MIIEvQ" not in events.text()


def test_lines_without_secrets_in_them_are_not_held_back() -> None:
    # Only a secret with a newline in it can span a line end: ordinary lines still go out at once.
    redact = Redactor(["ab\ncd\nef", SECRET])
    events = Events(redact)
    lines = LineSplitter(events, redact=redact)

    lines.feed("stdout", "progress 1\n")
    assert events.text() == "progress 1\n"
    lines.feed("stdout", "progress 2\nab\n")
    assert events.text() == "progress 1\nprogress 2\n"  # "ab\n" may be the secret's start: held
    lines.feed("stdout", "zz\n")
    assert events.text() == "progress 1\nprogress 2\nab\nzz\n"


def test_output_made_only_of_a_repeated_secret_stays_bounded_and_redacted() -> None:
    # A secret that overlaps itself ("abab" in "ababab…") leaves no place to cut between two of its
    # copies; the splitter must neither grow without end nor cut one in half.
    redact = Redactor(["abab"])
    events = Events(redact)
    lines = LineSplitter(events, redact=redact, piece=1024)
    output = "ab" * 2_000_000

    tracemalloc.start()
    try:
        feed_in_chunks(lines, output, 4096)
        lines.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert "abab" not in events.text()
    assert "aba" not in events.text() and "bab" not in events.text()
    assert peak < 2 * 1024 * 1024, f"peak {peak:,} bytes"
