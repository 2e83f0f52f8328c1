"""README.md's Python example, run as pasted against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, ServerProcess, bearer

pytestmark = pytest.mark.timeout(120)


def python_example() -> str:
    """The first ```python block of the README's "From Python and from the terminal"."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## From Python and from the terminal", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert blocks, "the README lost its Python example"
    return str(blocks[0])


def test_the_python_example_runs_as_pasted(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server()  # its own database: user 123 gets only what the example sends
    script = tmp_path / "example.py"
    script.write_text(python_example())
    done = subprocess.run(
        [sys.executable, str(script)],
        # Only the example's own setting: none of this process's MERCURIO_* reaches it.
        env={**without_mercurio_settings(), "MERCURIO_URL": server.url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "3 unread, the newest: Maintenance at 22:00"
    assert [line.split(" ", 2)[1:] for line in lines[1:]] == [
        ["reports", "Your report is ready"],
        ["general", "{'build': 812, 'ok': True}"],
        ["system", "Maintenance at 22:00"],
    ]
    inbox = httpx.get(f"{server.url}/api/clients/123/notifications", headers=bearer("123"))
    read = {str(n["data"]): "readAt" in n for n in inbox.json()["notifications"]}
    assert read["Your report is ready"] is True  # the example marked it read
    assert read["Maintenance at 22:00"] is False


def without_mercurio_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MERCURIO_")}
