"""`cairn serve`'s settings, read in one place: an option given wins, then the --config file, then the defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.core.errors import CairnError
from engine.serve.defaults import SERVE_DEFAULTS
from engine.serve.settings import SETTINGS, load_settings


def given(**options: Any) -> dict[str, Any]:
    """The flags as argparse leaves them: None for every option not on the command line."""
    flags: dict[str, Any] = dict.fromkeys(SETTINGS)
    flags.update(options)
    return flags


@pytest.fixture
def token(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text("t0ken\n")
    return str(path)


def test_the_defaults_fill_what_neither_the_options_nor_a_file_say(tmp_path: Path, token: str) -> None:
    settings = load_settings(given(token_file=token), default_runbooks=(tmp_path,), environ={})
    assert (settings.listen, settings.cooldown, settings.workers, settings.grace) == (
        SERVE_DEFAULTS["listen"],
        SERVE_DEFAULTS["cooldown"],
        SERVE_DEFAULTS["workers"],
        SERVE_DEFAULTS["grace"],
    )
    assert settings.token == "t0ken"
    assert settings.runbook_dirs == (tmp_path,)


def test_the_file_beats_the_defaults_and_an_option_given_beats_the_file(tmp_path: Path, token: str) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("cooldown: 2m\nworkers: 3\ngrace: 5s\npolicy:\n  breaker: 4\n")
    settings = load_settings(
        given(token_file=token, workers=6, grace=0.0),
        config=config,
        default_runbooks=(tmp_path,),
        environ={},
    )
    assert settings.cooldown == 120.0, "from the file"
    assert settings.policy.breaker == 4, "from the file"
    assert settings.workers == 6, "the option given wins over the file"
    assert settings.grace == 0.0, "a 0 given on the command line is given, not 'unset'"


def test_a_config_file_s_problems_come_with_file_and_line(tmp_path: Path, token: str) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("listen: 127.0.0.1:9095\nworkerz: 3\n")
    with pytest.raises(CairnError) as raised:
        load_settings(given(token_file=token), config=config, default_runbooks=(tmp_path,), environ={})
    assert f"{config}:2" in str(raised.value)
    assert "unknown setting 'workerz'" in str(raised.value)


def test_the_http_limits_come_from_the_defaults_the_file_and_the_options(tmp_path: Path, token: str) -> None:
    settings = load_settings(given(token_file=token), default_runbooks=(tmp_path,), environ={})
    assert (
        settings.max_connections,
        settings.header_timeout,
        settings.body_timeout,
        settings.idle_timeout,
    ) == (
        SERVE_DEFAULTS["max_connections"],
        SERVE_DEFAULTS["header_timeout"],
        SERVE_DEFAULTS["body_timeout"],
        SERVE_DEFAULTS["idle_timeout"],
    )
    config = tmp_path / "serve.yaml"
    config.write_text("max_connections: 64\nheader_timeout: 500ms\nbody_timeout: 1m\nidle_timeout: 15\n")
    settings = load_settings(
        given(token_file=token, idle_timeout=5.0), config=config, default_runbooks=(tmp_path,), environ={}
    )
    assert (settings.max_connections, settings.header_timeout, settings.body_timeout) == (64, 0.5, 60.0)
    assert settings.idle_timeout == 5.0, "the option given wins over the file"


@pytest.mark.parametrize(
    ("options", "text", "message"),
    [
        (
            {"header_timeout": 0.0},
            "",
            "--header-timeout (header_timeout) is 0: give a number of seconds above 0",
        ),
        ({"body_timeout": -1.0}, "", "--body-timeout (body_timeout) is -1: give a number of seconds above 0"),
        ({"max_connections": 0}, "", "--max-connections (max_connections) is 0: give 1 or more"),
        ({}, "idle_timeout: soon\n", "'soon' is not a duration"),
        ({}, "max_connections: lots\n", "'lots' is not of type 'integer'"),
    ],
)
def test_an_http_limit_that_cannot_work_is_refused_before_serving(
    tmp_path: Path, token: str, options: dict[str, Any], text: str, message: str
) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(text or "{}\n")
    with pytest.raises(CairnError) as raised:
        load_settings(
            given(token_file=token, **options), config=config, default_runbooks=(tmp_path,), environ={}
        )
    assert message in str(raised.value)


def test_the_store_is_a_file_or_a_postgresql_url_from_the_option_the_file_or_the_environment(
    tmp_path: Path, token: str
) -> None:
    url = "postgresql://cairn:pw@db.example:5432/cairn"
    settings = load_settings(given(token_file=token, journal=url), default_runbooks=(tmp_path,), environ={})
    assert (settings.journal.url, settings.journal.shown) == (
        url,
        "postgresql://cairn:***@db.example:5432/cairn",
    )

    config = tmp_path / "etc" / "serve.yaml"
    config.parent.mkdir()
    config.write_text(f"journal: {url}\n")
    from_file = load_settings(
        given(token_file=token), config=config, default_runbooks=(tmp_path,), environ={}
    )
    assert from_file.journal.url == url, "a URL in the config file is not taken for a path beside it"
    config.write_text("journal: state/journal.db\n")
    relative = load_settings(given(token_file=token), config=config, default_runbooks=(tmp_path,), environ={})
    assert relative.journal.path == config.parent / "state" / "journal.db"

    from_env = load_settings(
        given(token_file=token), default_runbooks=(tmp_path,), environ={"CAIRN_JOURNAL": url}
    )
    assert from_env.journal.url == url
    given_wins = load_settings(
        given(token_file=token, journal=str(tmp_path / "j.db")),
        default_runbooks=(tmp_path,),
        environ={"CAIRN_JOURNAL": url},
    )
    assert given_wins.journal.path == tmp_path / "j.db"


def test_the_lease_comes_from_the_defaults_the_file_and_the_options_and_must_leave_room_to_renew(
    tmp_path: Path, token: str
) -> None:
    settings = load_settings(given(token_file=token), default_runbooks=(tmp_path,), environ={})
    assert settings.lease == SERVE_DEFAULTS["lease"] == 3.0
    config = tmp_path / "serve.yaml"
    config.write_text("lease: 1500ms\n")
    assert (
        load_settings(given(token_file=token), config=config, default_runbooks=(tmp_path,), environ={}).lease
        == 1.5
    )
    assert (
        load_settings(
            given(token_file=token, lease=5.0), config=config, default_runbooks=(tmp_path,), environ={}
        ).lease
        == 5.0
    )
    with pytest.raises(CairnError) as raised:
        load_settings(given(token_file=token, lease=0.2), default_runbooks=(tmp_path,), environ={})
    assert "--lease (lease) is 0.2: give at least 1 second" in str(raised.value)
