"""Files a package carries beside its code: the licence matches what pyproject declares."""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def test_the_license_file_is_the_license_pyproject_names() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    text = (ROOT / "LICENSE").read_text()
    assert declared == "MIT"
    assert text.splitlines()[0] == "MIT License"
    assert "Permission is hereby granted, free of charge" in text
    assert "Copyright (c)" in text
