"""The `mercurio` command, run as users run it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from mercurio.auth import Authenticator
from mercurio.config import load_settings


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mercurio", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_token_is_signed_with_the_configured_key() -> None:
    result = run("token", "--user", "42", "--publisher", "--ttl", "2h")
    assert result.returncode == 0, result.stderr
    principal = Authenticator(load_settings({})).verify(result.stdout.strip())
    assert principal.user_id == "42" and principal.is_publisher
    assert principal.expires_at is not None


def test_token_with_a_bad_ttl_fails_clearly() -> None:
    result = run("token", "--user", "42", "--ttl", "soon")
    assert result.returncode == 2
    assert "ttl" in result.stderr.lower()


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    result = run("db", "upgrade", env={"MERCURIO_DB_CONN": f"sqlite:///{db}"})
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"notifications", "announcement_states", "preferences", "alembic_version"} <= tables
    again = run("db", "upgrade", env={"MERCURIO_DB_CONN": f"sqlite:///{db}"})
    assert again.returncode == 0


def test_db_upgrade_with_a_bad_url_names_the_setting() -> None:
    result = run("db", "upgrade", env={"MERCURIO_DB_CONN": "mysql://root:pw@host/db"})
    assert result.returncode == 2
    assert "MERCURIO_DB_CONN" in result.stderr and "pw" not in result.stderr


def test_db_upgrade_against_an_unreachable_database_is_one_line_not_a_traceback() -> None:
    conn = "postgresql://mercurio:pw@127.0.0.1:1/mercurio"
    result = run("db", "upgrade", env={"MERCURIO_DB_CONN": conn})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "MERCURIO_DB_CONN" in lines[0], result.stderr
    assert "pw" not in result.stderr


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "token", "db"):
        assert command in result.stdout


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"mercurio {version('mercurio')}"


def test_help_shows_flags_bare_and_values_by_name() -> None:
    result = run("send", "--help", env={"COLUMNS": "100"})
    assert result.returncode == 0
    assert "<bool>" not in result.stdout and "<str>" not in result.stdout.split("Options:")[1]
    options = {
        line.split()[0]: line.split()[1]
        for line in result.stdout.splitlines()[1:]
        if line.strip().startswith("--")
    }
    assert options["--all"] == "Announce"  # a flag: no value after it
    assert options["--json"] == "DATA"
    assert options["--to"] == "ID" and options["--url"] == "URL" and options["--cacert"] == "PEM"
