"""Start-up hardening (issue 9): settings that crashed, lied or exposed a node now stop it
with one line naming the setting, or work as documented."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mercurio.config import check_public_bind, load_settings
from mercurio.errors import ConfigError
from tests.conftest import ServerProcess, make_token

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "http://example.test"


def serve(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`python -m mercurio serve` that is expected to refuse before binding."""
    return subprocess.run(
        [sys.executable, "-m", "mercurio", "serve", "--port", "0", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], named: str) -> None:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode not in (0, None), output
    assert "Traceback" not in output, output
    assert len(output.splitlines()) <= 2, output
    assert named in output, output


def public_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


# -- 2. one value in a comma-list setting --------------------------------------------------------

COMMA_LISTS = {
    "MERCURIO_PUBLISHERS": "publishers",
    "MERCURIO_CORS_ALLOWED_ORIGINS": "cors_allowed_origins",
    "MERCURIO_CORS_ALLOWED_HEADERS": "cors_allowed_headers",
    "MERCURIO_CORS_ALLOWED_METHODS": "cors_allowed_methods",
}


@pytest.mark.parametrize("name", sorted(COMMA_LISTS))
@pytest.mark.parametrize(
    ("text", "expected"), [("666", ["666"]), ("666, 42,7", ["666", "42", "7"]), ("", [])]
)
def test_comma_list_setting_with_one_numeric_value_no_longer_stops_start_up(
    name: str, text: str, expected: list[str]
) -> None:
    settings = load_settings({name: text})
    assert getattr(settings, COMMA_LISTS[name]) == expected


def test_auth_algorithms_takes_one_value_or_several_but_not_none() -> None:
    assert load_settings({"MERCURIO_AUTH_ALGORITHMS": "HS512"}).auth_algorithms == ["HS512"]
    several = load_settings({"MERCURIO_AUTH_ALGORITHMS": "HS256,HS512"}).auth_algorithms
    assert several == ["HS256", "HS512"]
    with pytest.raises(ConfigError, match=r"^MERCURIO_AUTH_ALGORITHMS"):
        load_settings({"MERCURIO_AUTH_ALGORITHMS": ""})


def test_server_starts_with_a_single_numeric_publisher_id(
    make_server: Callable[..., ServerProcess],
) -> None:
    node = make_server({"MERCURIO_PUBLISHERS": "4242"})
    announce = {"sourceID": "ops", "data": "hello", "category": "system"}
    headers = {"Authorization": f"Bearer {make_token('4242')}"}
    answer = httpx.post(node.url + "/api/events/announce", json=announce, headers=headers)
    assert answer.status_code == 200, answer.text
    other = {"Authorization": f"Bearer {make_token('666')}"}  # the default, now replaced
    assert httpx.post(node.url + "/api/events/announce", json=announce, headers=other).is_error


def test_docker_compose_publishers_passthrough_starts_with_one_id_and_with_none(
    tmp_path: Path,
) -> None:
    """The compose file passes MERCURIO_PUBLISHERS through as one id, or empty when unset."""
    for value in ("666", ""):
        env = {"MERCURIO_PUBLISHERS": value, "MERCURIO_DB_CONN": f"sqlite:///{tmp_path}/m.db"}
        node = ServerProcess(env).start()
        try:
            assert httpx.get(node.url + "/healthz", timeout=10).status_code == 200
        finally:
            node.stop()


# -- 12. a wrong MERCURIO_DB_CONN, and MERCURIO_ENV inside .env ----------------------------------


@pytest.mark.parametrize(
    "conn",
    [
        "mysql://user@127.0.0.1/mercurio",
        "postgresql://postgres@127.0.0.1:1/test",
        "sqlite:///:memory:",
        "sqlite://",
        "postgresql://host:notaport/db",
    ],
)
def test_wrong_db_conn_is_one_line_not_a_traceback(conn: str) -> None:
    assert_one_line_refusal(serve({"MERCURIO_DB_CONN": conn}), "MERCURIO_DB_CONN")


def test_sqlite_path_under_a_missing_folder_is_refused_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    result = serve({"MERCURIO_DB_CONN": f"sqlite:///{missing}/mercurio.db"})
    assert_one_line_refusal(result, "MERCURIO_DB_CONN")
    assert not (tmp_path / "no").exists()
    bare = serve({"MERCURIO_DB_CONN": f"{missing}/mercurio.db"})  # a bare path is SQLite too
    assert_one_line_refusal(bare, "MERCURIO_DB_CONN")


def test_production_named_in_dot_env_loads_the_production_files(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MERCURIO_ENV=production\n")
    (tmp_path / ".env.production").write_text(f"MERCURIO_AUTH_PK_TEXT={'k' * 40}\n")
    (tmp_path / ".env.development").write_text("MERCURIO_NID=development-file\n")
    settings = load_settings({"MERCURIO_ENV_DIR": str(tmp_path)})
    assert settings.env == "production"
    assert settings.key_text() == "k" * 40 and settings.nid == ""


def test_env_name_order_real_environment_then_dot_env_local_then_dot_env(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MERCURIO_ENV=production\n")
    (tmp_path / ".env.local").write_text("MERCURIO_ENV=test\n")
    (tmp_path / ".env.test").write_text("MERCURIO_NID=test-file\n")
    base = {"MERCURIO_ENV_DIR": str(tmp_path)}
    settings = load_settings(base)
    assert (settings.env, settings.nid) == ("test", "test-file")
    assert load_settings({**base, "MERCURIO_ENV": "development"}).env == "development"


def test_serve_with_production_in_dot_env_refuses_the_development_key(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MERCURIO_ENV=production\n")
    result = serve({"MERCURIO_ENV_DIR": str(tmp_path)})
    assert_one_line_refusal(result, "MERCURIO_AUTH_PK_TEXT")
    assert "production" in result.stderr


# -- 13. production key posture ------------------------------------------------------------------


def test_production_refuses_a_short_hmac_key() -> None:
    result = serve({"MERCURIO_ENV": "production", "MERCURIO_AUTH_PK_TEXT": "s3cret"})
    assert_one_line_refusal(result, "MERCURIO_AUTH_PK_TEXT")
    assert "32 bytes" in result.stderr
    assert "s3cret" not in result.stderr
    long_enough = {"MERCURIO_ENV": "production", "MERCURIO_AUTH_PK_TEXT": "x" * 32}
    assert load_settings(long_enough).env == "production"


def test_production_refuses_a_short_hmac_key_read_from_a_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("short-file-key\n")
    with pytest.raises(ConfigError, match=r"^MERCURIO_AUTH_PK_PATH: .*32 bytes"):
        load_settings({"MERCURIO_ENV": "production", "MERCURIO_AUTH_PK_PATH": str(key)})


def test_production_public_key_without_audience_or_issuer_refuses_to_start() -> None:
    env = {
        "MERCURIO_ENV": "production",
        "MERCURIO_AUTH_ALGORITHMS": "RS256",
        "MERCURIO_AUTH_PK_TEXT": public_pem(),
        "MERCURIO_TICKET_SECRET": secrets.token_hex(32),
    }
    assert_one_line_refusal(serve(env), "MERCURIO_AUTH_AUDIENCE")
    assert load_settings({**env, "MERCURIO_AUTH_AUDIENCE": "mercurio"}).auth_audience
    assert load_settings({**env, "MERCURIO_AUTH_ISSUER": "https://id.example"}).auth_issuer


def test_development_public_key_without_audience_or_issuer_warns(
    make_server: Callable[..., ServerProcess],
) -> None:
    node = make_server({"MERCURIO_AUTH_ALGORITHMS": "RS256", "MERCURIO_AUTH_PK_TEXT": public_pem()})
    log = node.log_path.read_text()
    assert "config.unsafe" in log and "MERCURIO_AUTH_AUDIENCE" in log


# -- 14. a development node listening beyond loopback --------------------------------------------


@pytest.mark.parametrize("env", ["development", "test"])
def test_development_node_refuses_to_listen_on_every_interface(env: str) -> None:
    result = serve({"MERCURIO_ENV": env}, "--host", "0.0.0.0")
    assert_one_line_refusal(result, "MERCURIO_HTTP_HOST")
    assert "MERCURIO_ALLOW_PUBLIC_DEV" in result.stderr


def test_public_bind_rules() -> None:
    """Checked without binding: only loopback outside production unless explicitly allowed."""
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_public_bind(load_settings({"MERCURIO_HTTP_HOST": host}))
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.test"):
        with pytest.raises(ConfigError, match=r"^MERCURIO_HTTP_HOST"):
            check_public_bind(load_settings({"MERCURIO_HTTP_HOST": host}))
    check_public_bind(
        load_settings({"MERCURIO_HTTP_HOST": "0.0.0.0", "MERCURIO_ALLOW_PUBLIC_DEV": "true"})
    )
    production = {"MERCURIO_ENV": "production", "MERCURIO_AUTH_PK_TEXT": "p" * 32}
    check_public_bind(load_settings({**production, "MERCURIO_HTTP_HOST": "0.0.0.0"}))


# -- 15. CORS defaults ---------------------------------------------------------------------------


def test_test_env_allows_any_origin_without_credentials(
    make_server: Callable[..., ServerProcess],
) -> None:
    node = make_server()
    preflight = httpx.options(
        node.url + "/api/events/announce",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
        timeout=10,
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] in ("*", ORIGIN)
    assert preflight.headers.get("access-control-allow-credentials") != "true"
    simple = httpx.get(node.url + "/", headers={"Origin": ORIGIN}, timeout=10)
    assert simple.headers["access-control-allow-origin"] in ("*", ORIGIN)
    assert simple.headers.get("access-control-allow-credentials") != "true"


def test_production_cors_stays_closed_by_default(
    make_server: Callable[..., ServerProcess],
) -> None:
    node = make_server({"MERCURIO_ENV": "production", "MERCURIO_AUTH_PK_TEXT": "c" * 40})
    simple = httpx.get(node.url + "/", headers={"Origin": ORIGIN}, timeout=10)
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers
    preflight = httpx.options(
        node.url + "/api/events/announce",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_explicitly_empty_cors_origins_closes_development_too() -> None:
    assert load_settings({}).cors_origins == ["*"]
    assert load_settings({"MERCURIO_CORS_ALLOWED_ORIGINS": ""}).cors_origins == []
    assert load_settings({"MERCURIO_CORS_ALLOWED_ORIGINS": ORIGIN}).cors_origins == [ORIGIN]
