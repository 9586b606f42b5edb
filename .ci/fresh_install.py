"""Install the built wheel in a fresh virtualenv and run the README's examples from it.

Usage: ``python .ci/fresh_install.py DIST_DIR``. The virtualenv and the examples live in a
temporary directory outside the checkout, so nothing is imported from the working tree: what
runs is what a user who installs the wheel gets. Each example is served as the README says
(``uvicorn app:app``), ``python -m tbone_asgi listen`` from the same virtualenv subscribes, an
item is POSTed, and the listener must print it.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tempfile
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
ITEM = {"name": "milk", "price": 1.5}


def block(marker: str) -> str:
    return next(b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if marker in b)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_and_listen(bin_dir: Path, work: Path, marker: str) -> None:
    """Serve the README's ``marker`` example with uvicorn, listen, publish, check the event."""
    (work / "app.py").write_text(block(marker))
    port = free_port()
    server = subprocess.Popen(
        [bin_dir / "uvicorn", "app:app", "--port", str(port)],
        cwd=work,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"ws://127.0.0.1:{port}/ws"
    listener = subprocess.Popen(
        [
            bin_dir / "python",
            "-m",
            "tbone_asgi",
            "listen",
            url,
            "--events",
            "item_create",
            "--count",
            "1",
            "--retries",
            "50",
        ],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stderr is not None
        for line in listener.stderr:  # retries until uvicorn listens, then says so
            if line.startswith("# connected to"):
                break
        else:
            raise SystemExit(f"{marker}: the listener never connected")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/items",
            data=json.dumps(ITEM).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert json.loads(reply.read()) == ITEM
        out, _ = listener.communicate(timeout=20)
        event = json.loads(out)
        assert (event["name"], event["data"], event["channel"]) == ("item_create", ITEM, "pubsub")
    finally:
        listener.kill()
        server.terminate()
        _, err = server.communicate(timeout=20)
    # No traceback, no missing channel, and every line names its level (tbone's warnings
    # their logger too): nothing printed bare.
    bare = [line for line in err.splitlines() if not re.match(r"(INFO|WARNING):  ", line)]
    assert not bare, f"{marker}: uvicorn printed {bare}"
    assert "no channel named" not in err, err
    print(f"ok: the README's {marker!r} example, served from the wheel")


def main(dist: Path) -> None:
    [wheel] = dist.glob("tbone_asgi-*.whl")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        venv.create(work / "venv", with_pip=True)
        bin_dir = work / "venv" / "bin"
        subprocess.run(
            [
                bin_dir / "python",
                "-m",
                "pip",
                "install",
                "-q",
                f"{wheel}[asgi,client]",
                "uvicorn[standard]",
                "fastapi",
            ],
            check=True,
        )
        signals = subprocess.run(
            [bin_dir / "python", "-c", block("RecordingCarrier")],
            cwd=work,
            capture_output=True,
            text=True,
            check=True,
        )
        assert "'name': 'resource_create'" in signals.stdout, signals
        print("ok: the README's signals example, from the wheel")
        for marker in ("from starlette", "from fastapi"):
            serve_and_listen(bin_dir, work, marker)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
