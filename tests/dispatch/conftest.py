"""Fixtures of the dispatch tests."""

from __future__ import annotations

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
