"""Optional dependencies: a missing extra is named, and late names import at first use."""

from __future__ import annotations

import pytest

from tbone.dispatch.extras import lazy, missing, requires


def test_requires_names_the_extra_and_keeps_the_cause() -> None:
    with pytest.raises(ImportError) as info, requires("some.module", "Frobnicate", extra="frob"):
        import frobnicate_is_not_installed  # type: ignore[import-not-found]  # noqa: F401
    assert str(info.value) == "some.module needs Frobnicate: pip install 'tbone-asgi[frob]'"
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert str(missing("m", "x", "y")) == "m needs x: pip install 'tbone-asgi[y]'"
    with requires("some.module", "json", extra="none"):
        import json  # noqa: F401 - present: nothing happens


def test_lazy_imports_a_name_at_first_use() -> None:
    asked: list[str] = []
    getattr_ = lazy("here", {"json": ["dumps", "loads"]}, before=asked.append)
    import json

    assert getattr_("dumps") is json.dumps
    assert asked == ["dumps"]
    with pytest.raises(AttributeError, match="module 'here' has no attribute 'nope'"):
        getattr_("nope")
    assert asked == ["dumps"]
