"""Settings: the prototype's names, the .env order, and one clear line when one is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mercurio.config import DEVELOPMENT_KEY, load_settings
from mercurio.errors import ConfigError
from mercurio.urls import redact_url


def test_defaults_match_the_prototype() -> None:
    settings = load_settings({})
    assert settings.env == "development"
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8000)
    assert settings.key_text() == DEVELOPMENT_KEY
    assert settings.publisher_ids == frozenset({"666"})
    assert settings.sse_heartbeat == 15
    assert settings.stream_buffer == 256 and settings.replay_max == 1000
    assert settings.max_body_bytes == 64 * 1024


def test_env_files_first_one_wins_and_real_environment_above_all(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "MERCURIO_HTTP_PORT=1001\nMERCURIO_NID=from-env\nMERCURIO_SSE_HEARTBEAT=7\n"
    )
    (tmp_path / ".env.development").write_text("MERCURIO_HTTP_PORT=1002\nMERCURIO_NID=dev\n")
    (tmp_path / ".env.local").write_text("MERCURIO_HTTP_PORT=1003\n")
    (tmp_path / ".env.development.local").write_text("MERCURIO_HTTP_PORT=1004\n")
    base = {"MERCURIO_ENV_DIR": str(tmp_path)}
    settings = load_settings(base)
    assert settings.http_port == 1004
    assert settings.nid == "dev"
    assert settings.sse_heartbeat == 7
    assert load_settings({**base, "MERCURIO_HTTP_PORT": "2000"}).http_port == 2000


def test_local_file_is_skipped_in_test(tmp_path: Path) -> None:
    (tmp_path / ".env.local").write_text("MERCURIO_HTTP_PORT=1003\n")
    (tmp_path / ".env.test").write_text("MERCURIO_HTTP_PORT=1005\n")
    settings = load_settings({"MERCURIO_ENV_DIR": str(tmp_path), "MERCURIO_ENV": "test"})
    assert settings.http_port == 1005


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"MERCURIO_HTTP_PORT": "eighty"}, "MERCURIO_HTTP_PORT"),
        ({"MERCURIO_HTTP_PORT": "70000"}, "MERCURIO_HTTP_PORT"),
        ({"MERCURIO_ENV": "staging"}, "MERCURIO_ENV"),
        ({"MERCURIO_SSE_HEARTBEAT": "0"}, "MERCURIO_SSE_HEARTBEAT"),
        ({"MERCURIO_AUTH_ALGORITHMS": "HS256,RS256"}, "MERCURIO_AUTH_ALGORITHMS"),
        ({"MERCURIO_AUTH_ALGORITHMS": "none"}, "MERCURIO_AUTH_ALGORITHMS"),
        ({"MERCURIO_AUTH_PK_PATH": "/no/such/key"}, "MERCURIO_AUTH_PK_PATH"),
        ({"MERCURIO_AUTH_ALGORITHMS": "RS256"}, "MERCURIO_AUTH_PK_TEXT"),
        ({"MERCURIO_MQ": "on"}, "MERCURIO_MQ_CONN"),
        ({"MERCURIO_LOG_LEVEL": "loud"}, "MERCURIO_LOG_LEVEL"),
    ],
)
def test_a_wrong_setting_is_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    message = str(caught.value)
    assert message.startswith(named), message
    assert "\n" not in message


def test_production_refuses_the_development_key() -> None:
    with pytest.raises(ConfigError, match="development key"):
        load_settings({"MERCURIO_ENV": "production"})
    settings = load_settings({"MERCURIO_ENV": "production", "MERCURIO_AUTH_PK_TEXT": "s" * 32})
    assert settings.publisher_ids == frozenset()
    assert settings.log_as_json


def test_key_from_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("file-key")
    assert load_settings({"MERCURIO_AUTH_PK_PATH": str(key)}).key_text() == "file-key"


def test_comma_lists() -> None:
    settings = load_settings(
        {"MERCURIO_PUBLISHERS": "1, 2,3", "MERCURIO_CORS_ALLOWED_ORIGINS": "http://a,http://b"}
    )
    assert settings.publisher_ids == frozenset({"1", "2", "3"})
    assert settings.cors_allowed_origins == ["http://a", "http://b"]


def test_redact_url() -> None:
    assert redact_url("amqp://guest:pw@host:5672/") == "amqp://guest:***@host:5672/"
    assert redact_url("redis://host:6379") == "redis://host:6379"


def test_server_start_fails_with_one_line_naming_the_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mercurio", "serve"],
        env={"PATH": "/usr/bin:/bin", "MERCURIO_HTTP_PORT": "not-a-port"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "MERCURIO_HTTP_PORT" in lines[0]
