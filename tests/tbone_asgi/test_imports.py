"""tbone_asgi without Starlette: the client and ``python -m tbone_asgi`` import, the endpoint
names raise an ImportError that names the extra.

Each check runs in a new interpreter whose ``sitecustomize`` (on PYTHONPATH) makes
``import starlette`` fail, as it does where only the ``client`` extra is installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def without_starlette(tmp_path: Path) -> dict[str, str]:
    """The environment of an interpreter in which Starlette cannot be imported."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nsys.modules['starlette'] = None  # import starlette: ImportError\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_the_client_imports_without_starlette(without_starlette: dict[str, str]) -> None:
    code = (
        "import importlib.util, tbone_asgi, tbone_asgi.client\n"
        "assert importlib.util.find_spec('starlette') is None\n"
        "print(tbone_asgi.client.subscribe.__name__, tbone_asgi.Limits.__name__, "
        "tbone_asgi.channels_lifespan.__name__)\n"
    )
    done = run(without_starlette, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["subscribe", "Limits", "channels_lifespan"]


def test_the_command_line_runs_without_starlette(without_starlette: dict[str, str]) -> None:
    done = run(without_starlette, "-m", "tbone_asgi", "listen", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: python -m tbone_asgi listen" in done.stdout


@pytest.mark.parametrize("name", ["channel_route", "ChannelMiddleware", "metrics_route"])
def test_an_endpoint_name_says_which_extra_to_install(
    without_starlette: dict[str, str], name: str
) -> None:
    done = run(without_starlette, "-c", f"from tbone_asgi import {name}")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"ImportError: tbone_asgi.{name} needs Starlette: pip install 'tbone-asgi[asgi]'"
    )


def test_the_names_are_there_with_starlette() -> None:
    import tbone_asgi
    from tbone_asgi.routing import channel_route

    assert tbone_asgi.channel_route is channel_route
    for name in tbone_asgi.__all__:
        assert getattr(tbone_asgi, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tbone_asgi.nope  # noqa: B018 - the attribute access is the test
