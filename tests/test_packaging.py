"""What installing tbone-asgi provides: the packages ``tbone`` and ``tbone_asgi``, nothing else.

``demo``, ``bench`` and ``tests`` live in the repository, importable from its root (where the
suite and CI run), but must not become top-level packages of an environment that installs
the project, editable or not. The wheels are built here with the build backend's own hooks
(no isolation, no network).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROVIDED = {"tbone", "tbone_asgi"}


def build(kind: str, out: Path, monkeypatch: pytest.MonkeyPatch) -> zipfile.ZipFile:
    """Build the ``wheel`` or ``editable`` wheel of the working tree into ``out``."""
    from hatchling import build as backend

    monkeypatch.chdir(ROOT)  # the hooks build the project in the working directory
    hook = backend.build_wheel if kind == "wheel" else backend.build_editable
    return zipfile.ZipFile(out / hook(str(out)))


def source_files(package: str) -> set[str]:
    """The files of ``package`` in the working tree, as wheel paths (no bytecode)."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_holds_the_two_packages_with_their_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = build("wheel", tmp_path, monkeypatch).namelist()
    top = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top == PROVIDED
    packaged = {name for name in names if ".dist-info/" not in name}
    assert packaged == source_files("tbone") | source_files("tbone_asgi")
    for data in ("tbone/py.typed", "tbone_asgi/py.typed", "tbone_asgi/static/tbone.d.ts"):
        assert data in packaged
    assert {"tbone_asgi/static/tbone.js", "tbone_asgi/static/package.json"} <= packaged


def test_the_editable_wheel_maps_the_two_packages_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = build("editable", tmp_path, monkeypatch)
    installed = [name for name in wheel.namelist() if ".dist-info/" not in name]
    [pth] = [name for name in installed if name.endswith(".pth")]
    # A .pth line that is not an import is a directory put on sys.path: the root, say.
    assert all(line.startswith("import ") for line in wheel.read(pth).decode().splitlines())
    finders = "".join(wheel.read(name).decode() for name in installed if name.endswith(".py"))
    assert set(re.findall(r"map_module\('(\w+)'", finders)) == PROVIDED


def test_this_environment_imports_only_the_two_packages_from_the_tree(tmp_path: Path) -> None:
    # From another directory, as any program of an app that installed tbone-asgi runs.
    code = (
        "import importlib.util, json\n"
        "specs = {m: importlib.util.find_spec(m) for m in ('tbone', 'tbone_asgi', 'demo', "
        "'bench', 'tests')}\n"
        "print(json.dumps({m: s.origin if s else None for m, s in specs.items()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    origins = json.loads(out)
    assert origins["tbone"], origins
    assert origins["tbone_asgi"], origins
    leaked = {
        m: origins[m]
        for m in ("demo", "bench", "tests")
        if origins[m] and Path(origins[m]).is_relative_to(ROOT / m)
    }
    assert not leaked, (
        f"importable from anywhere: {leaked}; reinstall the project (pip install -e "
        "'.[all,test]') if it was installed before pyproject.toml set dev-mode-exact"
    )


def test_the_metadata_has_the_version_the_urls_and_the_changelog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import email

    import tbone
    import tbone_asgi

    wheel = build("wheel", tmp_path, monkeypatch)
    [metadata] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    meta = email.message_from_bytes(wheel.read(metadata))
    assert meta["Version"] == tbone.__version__ == tbone_asgi.__version__
    urls = dict(line.split(", ", 1) for line in meta.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Changelog", "Issues"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())
    assert meta["License-Expression"] == "MIT"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel.namelist())
    # Keep a Changelog: an Unreleased section, then one per version with its date.
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert re.search(
        rf"^## \[{re.escape(tbone.__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, flags=re.M
    )
    assert f"[{tbone.__version__}]: https://" in changelog
