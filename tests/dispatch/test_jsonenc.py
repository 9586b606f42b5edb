from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from types import ModuleType
from typing import Any

import pytest
from bson import ObjectId
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, RootModel

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


def test_without_orjson_the_output_is_the_same(stdlib_jsonenc: ModuleType) -> None:
    std = stdlib_jsonenc
    value = {"v": [v for v, _ in EXTRA_TYPES], "é": 1}
    assert std.dumps(value) == jsonenc.dumps(value)
    assert std.dumps_bytes(value) == jsonenc.dumps_bytes(value)
    with pytest.raises(TypeError, match="convert it"):
        std.dumps(object())


# -- pydantic models: what model_dump(mode="json") gives, on both paths ------------------------


class Tag(BaseModel):
    label: str


class Item(BaseModel):
    id: uuid.UUID
    name: str = Field(alias="itemName")  # encoded by field name, as model_dump does
    price: decimal.Decimal
    color: Color
    created: datetime.datetime
    day: datetime.date
    tags: list[Tag]
    by_key: dict[str, Tag]


ITEM = Item(
    id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    itemName="milk",
    price=decimal.Decimal("1.10"),
    color=Color.RED,
    created=datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc),
    day=datetime.date(2024, 5, 1),
    tags=[Tag(label="dairy")],
    by_key={"é": Tag(label="fresh")},
)
ITEM_JSON = {
    "id": "12345678-1234-5678-1234-567812345678",
    "name": "milk",
    "price": "1.10",
    "color": "red",
    "created": "2024-05-01T12:30:00Z",
    "day": "2024-05-01",
    "tags": [{"label": "dairy"}],
    "by_key": {"é": {"label": "fresh"}},
}


@dataclasses.dataclass
class Holder:
    item: Item


MODEL_VALUES: list[tuple[Any, Any]] = [
    (ITEM, ITEM_JSON),
    ([ITEM, Tag(label="x")], [ITEM_JSON, {"label": "x"}]),
    (
        {"items": {"a": ITEM}, "when": datetime.date(2024, 5, 2)},
        {"items": {"a": ITEM_JSON}, "when": "2024-05-02"},
    ),
    (Holder(ITEM), {"item": ITEM_JSON}),
    (RootModel[list[Tag]]([Tag(label="root")]), [{"label": "root"}]),
]


@pytest.fixture(params=["default", "stdlib"])
def encoder(request: pytest.FixtureRequest, stdlib_jsonenc: ModuleType) -> ModuleType:
    """jsonenc as imported (orjson when installed) and its standard library path."""
    return jsonenc if request.param == "default" else stdlib_jsonenc


def test_the_model_dump_is_what_model_dump_gives() -> None:
    assert ITEM.model_dump(mode="json") == ITEM_JSON


@pytest.mark.parametrize(("value", "expected"), MODEL_VALUES)
def test_models_are_sent_as_their_json_dump(encoder: ModuleType, value: Any, expected: Any) -> None:
    # The same text on both paths: what encoding the model_dump(mode="json") of each gives.
    text = encoder.dumps(value)
    assert text == json.dumps(expected, ensure_ascii=False, separators=(",", ":"))
    assert encoder.dumps_bytes(value) == text.encode()


async def test_a_published_model_reaches_subscribers_as_its_dump_and_counts_at_that_size() -> None:
    from tbone.dispatch import MemoryChannel, MessageTooLarge
    from tbone.dispatch.testing import RecordingCarrier

    size = len(jsonenc.dumps_bytes(ITEM_JSON)) + len("item")
    channel = MemoryChannel(name="models", max_message_bytes=size)
    carrier = RecordingCarrier()
    channel.subscribe("item", carrier)
    await channel.publish("item", ITEM)  # exactly at the limit: taken
    [frame] = await carrier.wait_for(1)
    assert frame["payload"]["data"] == ITEM_JSON
    bigger = ITEM.model_copy(update={"tags": [*ITEM.tags, Tag(label="")]})
    with pytest.raises(MessageTooLarge) as refused:
        await channel.publish("item", bigger)
    dumped = jsonenc.dumps_bytes(bigger.model_dump(mode="json"))
    assert refused.value.size == len(dumped) + len("item")


def test_importing_tbone_dispatch_does_not_import_pydantic() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from tbone.dispatch import jsonenc\n"
        "try:\n"
        "    jsonenc.dumps(object())  # through every check of default(), pydantic's too\n"
        "except TypeError:\n"
        "    pass\n"
        "assert 'pydantic' not in sys.modules, sorted(m for m in sys.modules if 'pydantic' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
