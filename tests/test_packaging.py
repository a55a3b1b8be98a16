"""Every data file the library reads ships in the wheel: each matches a package-data pattern of pyproject.toml."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_data_file_is_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]["package-data"]
    missing = []
    for package, globs in patterns.items():
        base = ROOT / "src" / package.replace(".", "/")
        for path in base.rglob("*"):
            if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(base).as_posix()
            # setuptools globs do not cross "/" with "*", so compare part by part
            if not any(len(g.split("/")) == len(rel.split("/")) and
                       all(fnmatch.fnmatchcase(r, p) for r, p in zip(rel.split("/"), g.split("/"))) for g in globs):
                missing.append(f"{package}: {rel}")
    assert not missing, missing
