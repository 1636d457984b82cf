"""The build step pyproject.toml cannot say: the wheel carries the JS SDK's sources (clients/js/src) as
svc/static/sdk, so that ``/sdk/`` and the pages that import it work from a plain ``pip install .``.
Everything else about the package is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SDK_SOURCE = Path(__file__).resolve().parent / "clients" / "js" / "src"


class BuildWithSdk(build_py):
    """setuptools' build_py, then the SDK's sources copied into the built package."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode and SDK_SOURCE.is_dir():
            shutil.copytree(SDK_SOURCE, Path(self.build_lib) / "svc" / "static" / "sdk", dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithSdk})
