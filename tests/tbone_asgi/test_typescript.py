"""tbone.js for bundlers: its package.json and tbone.d.ts describe the module as it is.

A TypeScript project installs the client as the package would be installed (the files its
package.json lists), imports it by name and type-checks with ``tsc --strict``: the example
passes, each mistake in ``bad.ts`` is reported. tsc comes from the npm registry once, into
the pytest cache. Without node or npm the tests are skipped locally and fail under ``CI``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "tbone_asgi" / "static"
DECLARATIONS = (STATIC / "tbone.d.ts").read_text()
PACKAGE = json.loads((STATIC / "package.json").read_text())
TYPESCRIPT = "typescript@5"

EXAMPLE = """\
import {
  connect,
  SubscribeError,
  TBoneClient,
  websocketURL,
  type ClientState,
  type ErrorFrame,
  type Recovery,
  type StateChange,
  type TBoneEvent,
  type TBoneOptions,
  type WebSocketLike,
} from "tbone-asgi-client";

interface Item {
  id: string;
  name: string;
}

const options: TBoneOptions = {
  events: ["item_create", "item_delete"],
  since: null,
  backoff: { max: 5000 },
  pingInterval: 20000,
  pongTimeout: 5000,
  WebSocket, // the browser's
};
const client: TBoneClient = connect("/ws", options);
const off: () => void = client.on<Item>("item_create", (item, event) => {
  const name: string = item.name;
  console.log(name, event.id, event.name, event.channel);
});
off();
const every = (data: unknown, event: TBoneEvent): void => console.log(data, event.id);
client.on("*", every);
client.off("*", every);
client.onState(({ state, attempt, delay, code, reason }: StateChange) => {
  const now: ClientState = state;
  console.log(now, attempt, delay ?? 0, code ?? 1000, reason ?? "");
});
const removed: boolean = client.onRecovered((r: Recovery) => {
  if (!r.complete) console.log("missed since", r.since, r.channel);
})();
client.onError((error: ErrorFrame) => console.log(error.code, error.message, removed));

export async function use(): Promise<void> {
  try {
    await client.subscribe(["item_update"]);
  } catch (err) {
    if (err instanceof SubscribeError) console.log(err.code, err.events.join(","));
  }
  await client.unsubscribe(["item_delete"]);
  const ms: number = await client.ping(1000);
  console.log(ms, client.lastId, client.state, client.attempt, client.recoveries.length);
  console.log(client.connectURL(), client.url.href, client.events, client.options.backoff.max);
  client.reconnect();
  client.close(1000, "bye");
  client.connect().close();
}

class FakeSocket implements WebSocketLike {
  readyState = 0;
  onopen: WebSocketLike["onopen"] = null;
  onmessage: WebSocketLike["onmessage"] = null;
  onclose: WebSocketLike["onclose"] = null;
  constructor(readonly url: string) {}
  send(data: string): void {
    this.onmessage?.({ data });
  }
  close(code?: number, reason?: string): void {
    this.onclose?.({ code: code ?? 1000, reason: reason ?? "" });
  }
}
const url: URL = websocketURL("/ws", "https://example.com/app/");
new TBoneClient(url, { events: [], WebSocket: FakeSocket }).connect().close();
"""

# Each line is a mistake tsc must report: (line, TS error code, what the message names).
BAD = """\
import { connect } from "tbone-asgi-client";
const client = connect("/ws");
client.subscribe("item_create");
connect("/ws", { pingIntervall: 5 });
const state: "open" | "closed" = client.state;
client.on<{ n: number }>("e", (data) => data.name);
"""
BAD_ERRORS = [
    (3, "TS2345", "'string' is not assignable to parameter of type 'readonly string[]'"),
    (4, "TS2561", "'pingIntervall' does not exist in type 'TBoneOptions'"),
    (5, "TS2322", "Type 'ClientState' is not assignable"),
    (6, "TS2339", "Property 'name' does not exist on type '{ n: number; }'"),
]


def tool(name: str) -> str:
    """The path of ``name`` (node, npm); skip without it, fail under CI."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} not found: install Node.js 18+ with npm (.ci/run installs them in CI)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def tsc(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The command that runs tsc, installed once into the pytest cache (ignored by git)."""
    node, npm = tool("node"), tool("npm")
    cache = getattr(request.config, "cache", None)
    where = cache.mkdir("typescript5") if cache else tmp_path_factory.mktemp("typescript5")
    script = where / "node_modules" / "typescript" / "bin" / "tsc"
    if not script.exists():
        install = [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", where]
        result = subprocess.run(
            [*map(str, install), TYPESCRIPT], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"npm install {TYPESCRIPT} failed:\n{result.stderr}"
    return [node, str(script)]


def project(root: Path, resolution: str) -> Path:
    """A TypeScript project with the client installed as ``npm install tbone_asgi/static``
    would: only the files its package.json lists, under its name."""
    installed = root / "node_modules" / PACKAGE["name"]
    installed.mkdir(parents=True)
    for name in ["package.json", *PACKAGE["files"]]:
        shutil.copy(STATIC / name, installed / name)
    (root / "package.json").write_text(json.dumps({"type": "module", "private": True}))
    options = {
        "strict": True,
        "noEmit": True,
        "target": "ES2022",
        "module": "ESNext" if resolution == "bundler" else resolution,
        "moduleResolution": resolution,
        "lib": ["ES2022", "DOM"],
    }
    (root / "tsconfig.json").write_text(json.dumps({"compilerOptions": options}))
    (root / "example.ts").write_text(EXAMPLE)
    (root / "bad.ts").write_text(BAD)
    return root


@pytest.mark.parametrize("resolution", ["bundler", "node16"])
def test_the_example_type_checks_and_each_mistake_is_reported(
    tsc: list[str], tmp_path: Path, resolution: str
) -> None:
    root = project(tmp_path, resolution)
    result = subprocess.run(
        [*tsc, "-p", str(root), "--pretty", "false"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors = [line for line in result.stdout.splitlines() if re.match(r"\S+\(\d+,\d+\): ", line)]
    assert result.returncode != 0, result.stdout
    # Only bad.ts fails: example.ts and the declarations themselves check under --strict.
    assert all(line.startswith("bad.ts(") for line in errors), result.stdout
    reported = {(int(line.split("(")[1].split(",")[0]), line) for line in errors}
    for line_no, code, text in BAD_ERRORS:
        assert any(n == line_no and code in e and text in e for n, e in reported), (
            f"bad.ts line {line_no}: expected {code} {text!r}\n{result.stdout}"
        )
    assert len(errors) == len(BAD_ERRORS), result.stdout


def declared(block: str, pattern: str) -> list[str]:
    """The names ``pattern`` (one group) finds at the start of a line of the declarations
    inside the block that starts with ``block``."""
    start = DECLARATIONS.index(block)
    body = DECLARATIONS[start : DECLARATIONS.index("\n}\n", start)]
    return sorted(set(re.findall(pattern, body, flags=re.M)) - {"constructor"})


def test_the_declarations_name_everything_the_module_has() -> None:
    # What tbone.js has at run time, public names only (no leading underscore).
    script = """
    const m = await import(process.argv[1]);
    const client = new m.TBoneClient("ws://example.com/ws", { WebSocket: class {} });
    const pub = (names) => names.filter((n) => !n.startsWith("_") && n !== "constructor").sort();
    console.log(JSON.stringify({
      exports: Object.keys(m).sort(),
      methods: pub(Object.getOwnPropertyNames(m.TBoneClient.prototype)),
      properties: pub(Object.keys(client)),
      options: Object.keys(client.options).sort(),
      error: pub(Object.keys(new m.SubscribeError(["a"], { code: "c", message: "m" }))),
    }));
    """
    result = subprocess.run(
        [tool("node"), "--input-type=module", "-e", script, (STATIC / "tbone.js").as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    actual = json.loads(result.stdout)
    exports = sorted(re.findall(r"^export (?:class|function) (\w+)", DECLARATIONS, flags=re.M))
    assert actual["exports"] == exports
    client = "export class TBoneClient {"
    assert actual["methods"] == declared(client, r"^  (\w+)(?:<[^>]*>)?\(")
    assert actual["properties"] == declared(client, r"^  (\w+): ")
    assert actual["options"] == declared("export interface TBoneOptions {", r"^  (\w+)\?: ")
    # Error's own "message" and "stack" are declared by lib.es5's Error.
    error = declared("export class SubscribeError extends Error {", r"^  (\w+): ")
    assert sorted({*actual["error"], "name"} - {"message", "stack"}) == error


def test_the_package_is_the_python_packages_version_and_points_at_both_files() -> None:
    # The version is stated once, in tbone/__init__.py (pyproject.toml reads it from there).
    source = (STATIC.parents[1] / "tbone" / "__init__.py").read_text()
    python_version = re.search(r'^__version__ = "([^"]+)"', source, flags=re.M)
    assert python_version is not None
    assert PACKAGE["version"] == python_version.group(1) == version("tbone-asgi")
    assert PACKAGE["type"] == "module"
    assert PACKAGE["exports"]["."] == {"types": "./tbone.d.ts", "default": "./tbone.js"}
    assert PACKAGE["types"] == "./tbone.d.ts"
    assert sorted(PACKAGE["files"]) == ["tbone.d.ts", "tbone.js"]


def test_without_node_the_tests_skip_locally_and_fail_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"node not found.*\.ci/run"):
        tool("node")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="node not found"):
        tool("node")
