"""The JavaScript SDK: its copy in the package, how /sdk/ serves it, its types, its node tests."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from mercurio.api.sdk import SDK_DIR

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "clients" / "js"
NODE = shutil.which("node")
NO_NODE = "node is not installed (the SDK's own tests need Node 20 or later)"
SYNC = "cp clients/js/src/*.js clients/js/mercurio.d.ts mercurio/sdk/"


def sources() -> dict[str, bytes]:
    """What mercurio/sdk/ must hold: clients/js's modules and declarations."""
    files = [*sorted((JS / "src").glob("*.js")), JS / "mercurio.d.ts"]
    return {f.name: f.read_bytes() for f in files}


def imports_of(name: str) -> set[str]:
    """The relative modules a module imports or re-exports, followed to the end."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        text = (JS / "src" / current).read_text()
        todo += re.findall(r"""(?:import|export)\s[^'"]*?from\s+['"]\./([\w-]+\.js)['"]""", text)
    return seen


def test_the_package_copy_is_identical_to_clients_js() -> None:
    shipped = {f.name: f.read_bytes() for f in SDK_DIR.iterdir() if f.is_file()}
    wanted = sources()
    assert sorted(shipped) == sorted(wanted), f"mercurio/sdk/ differs in files: run `{SYNC}`"
    stale = [name for name in wanted if shipped[name] != wanted[name]]
    assert stale == [], f"mercurio/sdk/ is stale ({stale}): run `{SYNC}`"


def test_package_data_ships_every_sdk_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["mercurio"]
    for path in SDK_DIR.iterdir():
        relative = path.relative_to(ROOT / "mercurio").as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


def test_the_entry_module_imports_only_what_is_shipped() -> None:
    needed = imports_of("mercurio.js")
    assert {"client.js", "inbox.js", "shared.js", "stream.js", "token.js"} <= needed
    assert needed <= set(sources())


def test_sdk_routes_serve_modules_and_types_to_any_origin(server: Any) -> None:
    origin = {"Origin": "https://shop.example"}
    for name in sorted(imports_of("mercurio.js")):
        r = httpx.get(f"{server.url}/sdk/{name}", headers=origin)
        assert r.status_code == 200, name
        assert r.headers["content-type"] == "text/javascript; charset=utf-8"
        assert r.headers["access-control-allow-origin"] in ("*", "https://shop.example")
        assert r.headers["cache-control"].startswith("public, max-age=")
        assert r.content == (SDK_DIR / name).read_bytes()
    types = httpx.get(f"{server.url}/sdk/mercurio.d.ts")
    assert types.status_code == 200
    assert types.headers["content-type"] == "application/typescript; charset=utf-8"
    assert types.headers["access-control-allow-origin"] == "*"
    assert "export class MercurioClient" in types.text


def test_sdk_revalidates_with_etag(server: Any) -> None:
    first = httpx.get(f"{server.url}/sdk/mercurio.js")
    again = httpx.get(
        f"{server.url}/sdk/mercurio.js", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.headers["access-control-allow-origin"] == "*"
    assert again.headers["cache-control"] == first.headers["cache-control"]


@pytest.mark.parametrize("path", ["/sdk/missing.js", "/sdk/", "/sdk/../config.py", "/sdk/x.txt"])
def test_sdk_serves_nothing_else(server: Any, path: str) -> None:
    r = httpx.get(f"{server.url}{path}")
    assert r.status_code == 404
    assert isinstance(r.json()["error"], str)


def test_sdk_is_served_in_production_without_cors_settings(tmp_path: Path) -> None:
    """Production has no CORS origins by default; the SDK still loads on any site."""
    from tests.conftest import ServerProcess

    proc = ServerProcess.in_folder(
        tmp_path,
        {
            "MERCURIO_ENV": "production",
            "MERCURIO_AUTH_PK_TEXT": "a-production-key-of-enough-length-0123456789",
            "MERCURIO_PUSH": "off",
        },
    )
    try:
        proc.start()
    except RuntimeError as exc:
        pytest.skip(f"a production server would not start here: {exc}")
    try:
        r = httpx.get(f"{proc.url}/sdk/mercurio.js", headers={"Origin": "https://a.example"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "*"
    finally:
        proc.stop()


@pytest.mark.skipif(NODE is None, reason=NO_NODE)
def test_every_export_is_declared_in_the_types() -> None:
    """tsc is not installed here: check instead that the module's runtime exports and the
    declaration file's top-level exports are the same names."""
    script = "import('./src/mercurio.js').then(m => console.log(JSON.stringify(Object.keys(m))))"
    out = subprocess.run(
        [str(NODE), "--input-type=module", "-e", script],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    exported = set(json.loads(out.stdout))
    text = (JS / "mercurio.d.ts").read_text()
    values = set(re.findall(r"^export (?:declare )?(?:class|function|const) (\w+)", text, re.M))
    assert exported == values
    assert {"MercurioClient", "MercurioInbox", "MercurioError"} <= exported
    for method in ("list", "get", "markRead", "markUnread", "markAllRead", "delete"):
        assert re.search(rf"^\s+{method}\(", text, re.M), method
    for method in ("unreadCount", "preferences", "follow", "unfollow", "topics", "subscribe"):
        assert re.search(rf"^\s+{method}\(", text, re.M), method


@pytest.mark.skipif(NODE is None, reason=NO_NODE)
@pytest.mark.timeout(180)
def test_node_suite_passes_against_a_real_server(server: Any) -> None:
    """clients/js/test: the unit tests with fakes, and the live ones against this server."""
    env = {**os.environ, "MERCURIO_TEST_URL": server.url}
    done = subprocess.run(
        [str(NODE), "--test", "clients/js/test"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-4000:]
    counts = dict(re.findall(r"^# (pass|fail|skipped|cancelled) (\d+)$", report, re.M))
    assert counts.get("fail") == "0" and counts.get("cancelled") == "0", report[-2000:]
    assert counts.get("skipped") == "0", "the live tests did not run"
    assert int(counts["pass"]) >= 20
