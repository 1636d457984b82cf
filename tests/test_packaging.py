"""What a user installs: the wheel, built and installed into a fresh virtualenv (no checkout on its path),
carries the pages and the JS SDK, and /demo submits a task and shows its result in Debian's Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from svc.embedded import free_port, start_redis

from .conftest import ROOT, Service, wait_for
from .test_dashboard_browser import chromium_page, demo_counts_to_three

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding svc from its wheel (and its dependencies at the locked versions)."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheels = tmp / "dist"
    run = {"check": True, "capture_output": True, "cwd": tmp}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, ROOT], **run)
    (wheel,) = wheels.glob("svc-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], **run)
    constraints = ROOT / "constraints" / "tests.txt"
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-c", constraints, wheel], **run)
    return venv


def start(venv: Path, args: list[str], env: dict[str, str], log: Path) -> Service:
    """``svc …`` from the virtualenv's own console script, in a folder that holds no checkout."""
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [venv / "bin" / "svc", *args],
            env=env,
            cwd=log.parent,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Service(process, log)


@pytest.fixture(scope="module")
def deployed(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The installed API and a worker on a Redis of their own; the API's base URL."""
    tmp = tmp_path_factory.mktemp("deployed")
    server = start_redis(None, tmp)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SVC_", "PYTHON"))}
    env.update(SVC_REDIS_URL=server.url, SVC_NAMESPACE=f"wheel{uuid.uuid4().hex[:6]}", PYTHONUNBUFFERED="1")
    port = free_port()
    worker = start(installed, ["worker", "--loglevel", "INFO", "-c", "1"], env, tmp / "worker.log")
    api = start(installed, ["api", "--port", str(port), "--log-level", "warning"], env, tmp / "api.log")
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 90, "the installed API with a worker online", api.process)
        yield base
    finally:
        api.stop()
        worker.stop()
        server.stop()


def test_the_installed_package_is_not_this_checkout(installed: Path) -> None:
    where = subprocess.run(
        [installed / "bin" / "python", "-c", "import svc, sys; sys.stdout.write(svc.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=installed,
    ).stdout
    assert where.startswith(str(installed)) and "site-packages" in where


async def test_the_wheel_serves_the_sdk_and_the_pages(deployed: str) -> None:
    async with httpx.AsyncClient(base_url=deployed, timeout=10) as http:
        for page in ("/demo", "/dashboard"):
            assert (await http.get(page)).status_code == 200
        for module in sorted((ROOT / "clients" / "js" / "src").glob("*.js")):
            served = await http.get(f"/sdk/{module.name}")
            assert served.status_code == 200 and served.content == module.read_bytes(), module.name


async def test_demo_from_the_wheel_submits_and_shows_the_result(deployed: str) -> None:
    async with chromium_page() as (page, problems):
        assert await demo_counts_to_three(page, f"{deployed}/demo") == "3"
        assert not problems, problems
