"""Declarations checked against the code: the README's settings table, svc's public names, and the
boundary between the worker side and the API side."""

from __future__ import annotations

import re

import svc
from svc.settings import Settings
from tests.conftest import ROOT


def settings_rows() -> dict[str, str]:
    """The README's settings table: variable -> its default column."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Settings") :]
    section = section[: section.index("\n## ", 1)]
    return dict(re.findall(r"^\| `(SVC_[A-Z_]+)` \| ([^|]*) \|", section, flags=re.M))


def test_every_setting_is_in_the_readme_table_and_nothing_else_is() -> None:
    documented = settings_rows()
    fields = {f"SVC_{name.upper()}" for name in Settings.model_fields}
    assert fields - documented.keys() == set(), "settings missing from the README"
    assert documented.keys() - fields == set(), "README rows for settings that do not exist"


def test_the_readme_gives_each_numeric_settings_default() -> None:
    documented = settings_rows()
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, bool) or not isinstance(default, int | float):
            continue
        shown = documented[f"SVC_{name.upper()}"].strip().strip("`")
        assert float(shown) == float(default), f"SVC_{name.upper()}: README {shown}, code {default}"


def test_every_public_name_says_what_it_promises() -> None:
    for name in svc.__all__:
        value = getattr(svc, name)
        assert (value.__doc__ or "").strip(), f"svc.{name} has no docstring"


def test_the_worker_side_never_loads_the_api_side() -> None:
    """A worker process (svc worker, or celery -A on an instrumented app) imports svc's worker side and
    the wire format only: no FastAPI, no Starlette, nothing of svc's API, fan-out or monitor."""
    import subprocess
    import sys

    code = (
        "import sys, svc\n"
        "svc.instrument, svc.expose, svc.report_progress\n"
        "import svc.celery_app, svc.tasks, svc.worker.steps, svc.worker.transport\n"
        "api_side = ('fastapi', 'starlette', 'uvicorn', 'svc.api', 'svc.gateway', 'svc.runtime',\n"
        "            'svc.bridge', 'svc.edge', 'svc.enqueue', 'svc.fanout', 'svc.monitor', 'svc.demo')\n"
        "print(sorted(name for name in sys.modules if name.startswith(api_side)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]", done.stdout
