"""Optional dependencies (the package's extras): imports that say what to install, and late ones.

A module that needs a web framework (or another extra) imports it at the top under
:func:`requires`, so a missing one raises an ImportError naming the extra::

    with requires(__name__, "aiohttp", extra="aiohttp"):
        from aiohttp import web

:func:`lazy` makes a module ``__getattr__`` (PEP 562) for names that live in other modules and
are imported at first use: names of a module that imports this one (either may then be imported
first), or names that need an extra the rest of the package does not.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = ["lazy", "missing", "requires"]


def missing(module: str, needs: str, extra: str) -> ImportError:
    """The ImportError for ``module`` without ``needs``: ``... pip install 'tbone-asgi[extra]'``."""
    return ImportError(f"{module} needs {needs}: pip install 'tbone-asgi[{extra}]'")


@contextlib.contextmanager
def requires(module: str, needs: str, *, extra: str) -> Iterator[None]:
    """Turn an ImportError raised in the block into :func:`missing`'s (chained to it)."""
    try:
        yield
    except ImportError as exc:
        raise missing(module, needs, extra) from exc


def lazy(
    module: str,
    homes: Mapping[str, Iterable[str]],
    *,
    before: Callable[[str], None] | None = None,
) -> Callable[[str], Any]:
    """A ``__getattr__`` for ``module``: each name of ``homes`` (home module: names) is imported
    from its home at first use; any other name is an AttributeError, as usual.

    ``before(name)`` runs before the import (to raise :func:`missing` for that name).
    """
    home_of = {name: home for home, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        home = home_of.get(name)
        if home is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        if before is not None:
            before(name)
        return getattr(importlib.import_module(home), name)

    return __getattr__
