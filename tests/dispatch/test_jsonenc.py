from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from typing import Any

import pytest
from bson import ObjectId
from hypothesis import given
from hypothesis import strategies as st

from tbone.dispatch import jsonenc


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


EXTRA_TYPES: list[tuple[Any, Any]] = [
    (datetime.datetime(2024, 5, 1, 12, 30, 15, 120000), "2024-05-01T12:30:15.120000"),
    (
        datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc),
        "2024-05-01T00:00:00+00:00",
    ),
    (datetime.date(2024, 5, 1), "2024-05-01"),
    (datetime.time(8, 15), "08:15:00"),
    (uuid.UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
    (decimal.Decimal("1.10"), "1.10"),
    (Color.RED, "red"),
    ({3}, [3]),
    (frozenset({"a"}), ["a"]),
    (b"\x00\xffhi", "AP9oaQ=="),
    (ObjectId("65f0c0ffee0000000000beef"), "65f0c0ffee0000000000beef"),
    (Point(1, 2), {"x": 1, "y": 2}),
]


@pytest.mark.parametrize(("value", "expected"), EXTRA_TYPES)
def test_extra_types(value: Any, expected: Any) -> None:
    assert json.loads(jsonenc.dumps({"v": value})) == {"v": expected}


@pytest.mark.parametrize(("value", "expected"), EXTRA_TYPES)
def test_orjson_and_the_standard_library_agree(value: Any, expected: Any) -> None:
    std = json.dumps(
        {"v": value, "é": [1, 2.5, None, True]},
        ensure_ascii=False,
        separators=(",", ":"),
        default=jsonenc.default,
    )
    assert jsonenc.dumps({"v": value, "é": [1, 2.5, None, True]}) == std


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(json_values)
def test_same_text_as_the_standard_library(value: Any) -> None:
    assert jsonenc.dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert jsonenc.loads(jsonenc.dumps(value)) == value


def test_unknown_types_say_what_to_do() -> None:
    with pytest.raises(TypeError, match=r"object is not JSON serializable.*convert it"):
        jsonenc.dumps(object())


def test_bytes_variant_is_utf8() -> None:
    assert jsonenc.dumps_bytes({"é": 1}) == '{"é":1}'.encode()


def test_without_orjson_the_output_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    monkeypatch.setitem(sys.modules, "orjson", None)  # import orjson -> ImportError
    spec = importlib.util.find_spec("tbone.dispatch.jsonenc")
    assert spec is not None
    assert spec.loader is not None
    std = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(std)
    assert std.ORJSON is False
    value = {"v": [v for v, _ in EXTRA_TYPES], "é": 1}
    assert std.dumps(value) == jsonenc.dumps(value)
    assert std.dumps_bytes(value) == jsonenc.dumps_bytes(value)
    with pytest.raises(TypeError, match="convert it"):
        std.dumps(object())
