"""Packaging hook: ship the presets and moeplan's own tables inside the package.

`configs/` and `tuned/` stay at the top of the repository (that is where people edit them);
a wheel (and so `pip install .` and pipx) gets copies under `moeplan/_data/`, which
`moeplan.base.paths` finds. Editable installs read the checkout's folders directly, so nothing is
copied for them. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# (folder at the top of the repo, file patterns shipped); tuned/'s subfolders and logs stay out
SHIPPED = (("configs", ("*.json",)), ("tuned", ("*.json", "*.csv", "REPORT.md")))


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder, patterns in SHIPPED:
            dest = Path(self.build_lib) / "moeplan" / "_data" / folder
            dest.mkdir(parents=True, exist_ok=True)
            for pattern in patterns:
                for f in sorted((ROOT / folder).glob(pattern)):
                    shutil.copy2(f, dest / f.name)


setup(cmdclass={"build_py": BuildPyWithData})
