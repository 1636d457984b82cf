"""The JS SDK's own suite (node --test: unit, against real svc processes, and in Debian's chromium), and
the dashboard's modules' unit tests (node --test, no DOM)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .conftest import ROOT

JS = ROOT / "clients" / "js"


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_js_sdk_suite_passes() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (scripts/test installs it from Debian where it can)")
    if not (JS / "node_modules").is_dir():
        pytest.skip("clients/js dependencies are not installed: run `npm --prefix clients/js ci`")
    env = {key: value for key, value in os.environ.items() if not key.startswith("SVC_")}
    result = subprocess.run(
        ["npm", "test"], cwd=JS, env=env, capture_output=True, text=True, timeout=840, check=False
    )
    lines = (result.stdout + result.stderr).splitlines()
    tail = "\n".join(lines[-60:])
    # the failing subtests themselves, with what node:test says of each, not only the summary
    failures = "\n".join(
        "\n".join(lines[index : index + 25]) for index, line in enumerate(lines) if "not ok" in line
    )
    assert result.returncode == 0, f"npm test failed:\n{failures}\n…\n{tail}"
    print(tail)


@pytest.mark.timeout(120)
def test_dashboard_modules_unit_tests_pass() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (scripts/test installs it from Debian where it can)")
    tests = ROOT / "svc" / "static" / "dashboard" / "test"
    result = subprocess.run(
        ["node", "--test", str(tests)], cwd=ROOT, capture_output=True, text=True, timeout=100, check=False
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "# fail 0" in result.stdout
