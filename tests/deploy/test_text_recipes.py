"""docs/deploy.md's systemd unit, Dockerfile and compose file: checked for syntax, not run.

No container runtime or init system runs here, so these are checked with what exists: the unit
with ``systemd-analyze verify`` (its program swapped for an executable stand-in, since
verify checks that it exists), the compose file as YAML with the structure compose reads,
the Dockerfile's instructions. docs/deploy.md says so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.recipes import DEPLOY, block, command, replace


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    program = tmp_path / "gunicorn"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    unit = replace(block("app.service"), "/srv/app/.venv/bin/gunicorn", str(program))
    (tmp_path / "app.service").write_text(unit)
    verified = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / "app.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stderr
    assert "Unknown" not in verified.stderr
    assert "ignoring" not in verified.stderr, verified.stderr
    # The unit runs the command the gunicorn recipe runs (and tests/deploy/test_gunicorn.py).
    gunicorn = command("gunicorn app:app ")
    assert f"ExecStart=/srv/app/.venv/bin/{gunicorn}" in block("app.service")


def test_the_compose_file_is_what_compose_reads() -> None:
    compose = yaml.safe_load(block("compose.yaml"))
    assert set(compose) == {"services", "volumes"}
    app, redis = compose["services"]["app"], compose["services"]["redis"]
    assert app["build"] == "."
    assert app["environment"]["REDIS_URL"] == "redis://redis:6379/0"  # the service's name
    assert app["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    [volume] = redis["volumes"]
    assert volume.split(":")[0] in compose["volumes"]


INSTRUCTIONS = {
    "FROM", "WORKDIR", "COPY", "RUN", "USER", "EXPOSE", "HEALTHCHECK", "CMD", "ENV", "ARG",
}  # fmt: skip


def test_the_dockerfile_has_known_instructions_and_the_recipes_command() -> None:
    lines = [line for line in block("Dockerfile").splitlines() if line.strip()]
    assert lines[0].startswith("FROM python:3.")
    for line in lines:
        assert line.split()[0] in INSTRUCTIONS, line
    cmd = next(line for line in lines if line.startswith("CMD "))
    args = yaml.safe_load(cmd.removeprefix("CMD "))  # the exec form is a JSON array
    gunicorn = command("gunicorn app:app ").split()
    bound = replace(" ".join(gunicorn), "127.0.0.1:8000", "0.0.0.0:8000")  # in a container
    assert " ".join(args) == bound
    assert "not run in a container" in " ".join(DEPLOY.read_text().split())
