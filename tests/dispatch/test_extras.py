"""Optional dependencies: a missing extra is named, and late names import at first use."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tbone.dispatch.extras import lazy, missing, requires

ROOT = Path(__file__).resolve().parents[2]


def test_requires_names_the_extra_and_keeps_the_cause() -> None:
    with pytest.raises(ImportError) as info, requires("some.module", "Frobnicate", extra="frob"):
        import frobnicate_is_not_installed  # type: ignore[import-not-found]  # noqa: F401
    assert str(info.value) == "some.module needs Frobnicate: pip install 'tbone-asgi[frob]'"
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert str(missing("m", "x", "y")) == "m needs x: pip install 'tbone-asgi[y]'"
    with requires("some.module", "json", extra="none"):
        import json  # noqa: F401 - present: nothing happens


def test_lazy_imports_a_name_at_first_use() -> None:
    asked: list[str] = []
    getattr_ = lazy("here", {"json": ["dumps", "loads"]}, before=asked.append)
    import json

    assert getattr_("dumps") is json.dumps
    assert asked == ["dumps"]
    with pytest.raises(AttributeError, match="module 'here' has no attribute 'nope'"):
        getattr_("nope")
    assert asked == ["dumps"]


@pytest.mark.parametrize(
    ("blocked", "module", "extra"),
    [
        ("sanic", "tbone.dispatch.carriers.sanic_websocket", "sanic"),
        ("sanic", "tbone.dispatch.carriers.sanic_routes", "sanic"),
        ("aiohttp", "tbone.dispatch.carriers.aiohttp_websocket", "aiohttp"),
        ("aiohttp", "tbone.dispatch.carriers.aiohttp_routes", "aiohttp"),
    ],
)
def test_a_framework_module_without_its_framework_names_the_extra(
    blocked: str, module: str, extra: str
) -> None:
    code = f"import sys; sys.modules[{blocked!r}] = None; import {module}"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: tbone.dispatch.carriers.")
    assert last.endswith(f"pip install 'tbone-asgi[{extra}]'")


@pytest.mark.parametrize("framework", ["sanic", "aiohttp"])
def test_the_public_module_names_the_carrier_and_its_routes(framework: str) -> None:
    carrier = importlib.import_module(f"tbone.dispatch.carriers.{framework}_websocket")
    routes = importlib.import_module(f"tbone.dispatch.carriers.{framework}_routes")
    assert (carrier.add_route, carrier.serve) == (routes.add_route, routes.serve)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        carrier.nothing  # noqa: B018 - the attribute access is the test


def test_either_module_of_a_framework_may_be_imported_first() -> None:
    for first in (
        "sanic_carrier",
        "sanic_routes",
        "sanic_websocket",
        "aiohttp_carrier",
        "aiohttp_routes",
        "aiohttp_websocket",
    ):
        framework = first.split("_")[0]
        code = (
            f"import tbone.dispatch.carriers.{first}\n"
            f"from tbone.dispatch.carriers.{framework}_websocket import add_route, serve\n"
            f"from tbone.dispatch.carriers.{framework}_routes import add_route as again\n"
            "assert add_route is again\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (first, done.stderr)
