"""JSON text for the wire: the standard library, or orjson when it is installed.

Both give the same text for the same value: compact separators, UTF-8 kept as is (no ``\\uXXXX``
escapes), and these extra types:

==================  ===============================================
datetime, date,     ISO 8601 (``value.isoformat()``)
time
UUID                its canonical string
Decimal             its string (no precision is lost)
Enum                its ``value``
set, frozenset      a list (in iteration order)
bytes, bytearray    standard base64 text
bson ObjectId       its 24-digit hex string (when ``bson`` is importable)
dataclass           a dict of its fields
pydantic model      ``model.model_dump(mode="json")`` (pydantic v2)
==================  ===============================================

A pydantic model is encoded as pydantic itself encodes it for JSON: by field name (not by
alias), with pydantic's formats for the fields it holds (``"2024-05-01T00:00:00Z"`` for a UTC
datetime, for example). Models may sit anywhere in the data, in lists and dicts. pydantic is
never imported here: a model exists only once pydantic has been imported, so the check looks
for ``pydantic.main`` in ``sys.modules``.

Two documented differences remain: NaN and infinities raise ``ValueError`` with the standard
library but become ``null`` with orjson, and integers beyond 64 bits raise ``TypeError`` with
orjson.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import json
import sys
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["ORJSON", "default", "dumps", "dumps_bytes", "loads"]

_ObjectId: Any
try:  # pragma: no cover - depends on the environment
    from bson import ObjectId as _ObjectId
except ImportError:  # pragma: no cover
    _ObjectId = None


def default(obj: Any) -> Any:
    """Turn a value that JSON has no type for into one it has; ``TypeError`` for the rest."""
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, decimal.Decimal):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if _ObjectId is not None and isinstance(obj, _ObjectId):
        return str(obj)
    if _is_pydantic_model(obj):
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(
        f"Object of type {type(obj).__name__} is not JSON serializable; "
        "convert it to a dict, list, str or number, or to a type that tbone.dispatch.jsonenc "
        "lists"
    )


def _is_pydantic_model(obj: Any) -> bool:
    """Whether ``obj`` is a pydantic v2 model, without importing pydantic."""
    # BaseModel lives in pydantic.main: no model can exist before that module is imported.
    # A pydantic 1 model has no model_dump(): it falls through to the TypeError.
    main = sys.modules.get("pydantic.main")
    return main is not None and isinstance(obj, main.BaseModel) and hasattr(obj, "model_dump")


_std_encoder = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=default
)

dumps_bytes: Callable[[Any], bytes]
dumps: Callable[[Any], str]

try:
    import orjson

    ORJSON = True
    _OPTIONS = orjson.OPT_NON_STR_KEYS

    def dumps_bytes(obj: Any) -> bytes:
        """Encode ``obj`` to UTF-8 JSON bytes."""
        try:
            return orjson.dumps(obj, default=default, option=_OPTIONS)
        except orjson.JSONEncodeError as exc:
            # orjson replaces the message of default(); keep ours, it says what to do.
            raise TypeError(str(exc.__cause__ or exc)) from exc

    def dumps(obj: Any) -> str:
        """Encode ``obj`` to JSON text."""
        return dumps_bytes(obj).decode()

    loads: Callable[[str | bytes], Any] = orjson.loads

except ImportError:  # pragma: no cover - exercised by the stdlib job in CI
    ORJSON = False

    def dumps_bytes(obj: Any) -> bytes:
        """Encode ``obj`` to UTF-8 JSON bytes."""
        return _std_encoder.encode(obj).encode()

    def dumps(obj: Any) -> str:
        """Encode ``obj`` to JSON text."""
        return _std_encoder.encode(obj)

    loads = json.loads
