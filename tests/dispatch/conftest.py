"""Fixtures of the dispatch tests."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest

from tbone.dispatch import jsonenc


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text ``tbone.dispatch.jsonenc.loads`` parses from now on (as str), in order.

    Frames a RecordingCarrier decodes show up too; a test looks for its data's own text.
    """
    texts: list[str] = []
    loads = jsonenc.loads

    def spy(text: str | bytes) -> Any:
        texts.append(text.decode() if isinstance(text, bytes) else text)
        return loads(text)

    monkeypatch.setattr(jsonenc, "loads", spy)
    return texts


@pytest.fixture
def stdlib_jsonenc(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh copy of ``tbone.dispatch.jsonenc`` loaded as if orjson were not installed.

    ``tbone.dispatch.jsonenc`` itself takes orjson when it is installed, so a test comparing
    the two runs both paths in one process.
    """
    monkeypatch.setitem(sys.modules, "orjson", None)  # import orjson -> ImportError
    spec = importlib.util.find_spec("tbone.dispatch.jsonenc")
    assert spec is not None
    assert spec.loader is not None
    std = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(std)
    assert std.ORJSON is False
    return std
