"""Declarations checked against the code: the README's settings table and svc's public names."""

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
