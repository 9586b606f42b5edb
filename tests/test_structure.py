"""The package's structure: imports only go down the layers of docs/architecture.md, no circle,
and no class that holds more than one idea (as a rough check, none over 300 lines)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tbone", "tbone_asgi")

# The layers of docs/architecture.md, bottom first: a module may import its own layer and the
# ones below. A module's layer is that of the longest prefix listed (a module of no prefix
# fails the test: place it). Import paths kept for users (the packages' __init__, TBone's
# carrier modules, the old routes modules) are the top layer: they re-export from below.
LAYERS: list[tuple[str, list[str]]] = [
    (
        "foundations",
        [
            "tbone._logging",
            "tbone.dispatch.errors",
            "tbone.dispatch.checks",
            "tbone.dispatch.jsonenc",
            "tbone.dispatch.timeouts",
            "tbone.dispatch.extras",
            "tbone.dispatch.wire",
            "tbone.dispatch.events",
            "tbone.dispatch.signals",
            "tbone.dispatch.origin",
            "tbone.dispatch._private",
            "tbone_asgi.client",
            "tbone_asgi.client_state",
            "tbone_asgi.__main__",
            "tbone_asgi.uvicorn",
            "tbone_asgi.stopping",
        ],
    ),
    ("delivery", ["tbone.dispatch.delivery"]),
    (
        "carriers",
        [
            "tbone.dispatch.carriers",
            "tbone.dispatch.carriers.options",
            "tbone.dispatch.carriers.asgi_websocket",
            "tbone.dispatch.carriers.sanic_carrier",
            "tbone.dispatch.carriers.aiohttp_carrier",
            "tbone.dispatch.testing",
        ],
    ),
    ("channels", ["tbone.dispatch.channels"]),
    ("serving", ["tbone.dispatch.protocol", "tbone.dispatch.refusals", "tbone.dispatch.serving"]),
    (
        "glue",
        [
            "tbone.dispatch.glue",
            "tbone_asgi.endpoint",
            "tbone_asgi.gunicorn",
            "tbone_asgi.health",
            "tbone_asgi.lifespan",
            "tbone_asgi.metrics",
            "tbone_asgi.middleware",
            "tbone_asgi.not_found",
            "tbone_asgi.routing",
        ],
    ),
    (
        "import paths",
        [
            "tbone",
            "tbone.dispatch",
            "tbone_asgi",
            "tbone.dispatch.carriers.sanic_websocket",
            "tbone.dispatch.carriers.aiohttp_websocket",
            "tbone.dispatch.carriers.sanic_routes",
            "tbone.dispatch.carriers.aiohttp_routes",
        ],
    ),
]

# Exact names only (not prefixes): the packages whose __init__ is an import path.
_EXACT = {"tbone", "tbone.dispatch", "tbone_asgi"}

# Classes the other half of the restructuring is splitting; remove each name once it is
# under the limit (this list is temporary and should be empty).
MAX_CLASS_LINES = 300


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix in _EXACT:
                matches = module == prefix
            else:
                matches = module == prefix or module.startswith(prefix + ".")
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def imports_of(module: str) -> list[tuple[str, int]]:
    """The modules of the packages ``module`` imports (at any depth of its code), with lines."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            # `from pkg import module` names the module; `from module import name` the module.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.append((name, node.lineno))
    return found


def test_every_module_has_a_layer() -> None:
    assert [m for m in MODULES if layer_of(m) < 0] == []


def test_imports_only_go_down_the_layers() -> None:
    upward = [
        f"{module}:{line} imports {target} ({LAYERS[layer_of(target)][0]} is above "
        f"{LAYERS[layer_of(module)][0]})"
        for module in MODULES
        for target, line in imports_of(module)
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_no_import_circle() -> None:
    graph = {m: sorted({t for t, _ in imports_of(m)}) for m in MODULES}
    # A package's __init__ importing its own submodules is how it re-exports them; a
    # submodule importing its package back (channels.mem -> channels) is the dependency.
    done: set[str] = set()
    stack: list[str] = []

    def visit(node: str) -> None:
        if node in stack:
            cycle = [*stack[stack.index(node) :], node]
            pytest.fail("import circle: " + " -> ".join(cycle))
        if node in done:
            return
        stack.append(node)
        for target in graph[node]:
            visit(target)
        stack.pop()
        done.add(node)

    for module in graph:
        visit(module)


def test_the_architecture_page_lists_the_layers_in_order() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    listed = re.findall(r"^\| (\d) \((?P<name>[a-z ]+)\) \|", page, flags=re.MULTILINE)
    seen = list(dict.fromkeys((int(n), name) for n, name in listed))
    assert seen == [(i + 1, name) for i, (name, _) in enumerate(LAYERS)]


def test_no_class_is_over_300_lines() -> None:
    over: list[str] = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno
                name = f"{module}.{node.name}"
                if lines > MAX_CLASS_LINES:
                    over.append(f"{name}: {lines} lines")
    assert over == []


# The flow-control marks are stated once, in docs/channels.md#flow-control; everything else
# names them (behind, high-water and low-water mark) and links there.
RESTATED = re.compile(
    r"half full|past half|half of either|to a quarter|a quarter of (its|the) outbox"
)
# Modules the other half of the restructuring is rewriting; remove each once it links instead.


def test_the_flow_control_marks_are_stated_once() -> None:
    places = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    places += list(MODULES.values())
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in places
        if path.name != "channels.md"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if RESTATED.search(line)
    ]
    assert found == []
