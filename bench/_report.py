"""Medians, percentiles and Markdown tables shared by the benchmarks."""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Sequence

__all__ = ["Table", "fmt", "median", "percentile", "ratio"]


def median(values: Sequence[float]) -> float:
    """The median of ``values``; NaN for none (a run that measured nothing shows as such)."""
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` by the nearest-rank method; NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(ours: float, theirs: float) -> str:
    """``ours / theirs`` as ``0.42x``; ``-`` when either side is missing or zero."""
    if not theirs or math.isnan(ours) or math.isnan(theirs):
        return "-"
    return f"{ours / theirs:.2f}x"


def fmt(value: float | int | str, digits: int = 1) -> str:
    """A number for a table cell: thousands separated, ``digits`` decimals below 100."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


class Table:
    """A Markdown table built row by row, printed once complete."""

    def __init__(self, title: str, headers: Sequence[str], note: str = "") -> None:
        self.title = title
        self.headers = list(headers)
        self.note = note
        self.rows: list[list[str]] = []

    def add(self, *cells: float | int | str) -> None:
        """Add a row; numbers are formatted with :func:`fmt`. Raises ValueError on a bad width."""
        if len(cells) != len(self.headers):
            raise ValueError(
                f"{self.title}: row has {len(cells)} cells, expected {len(self.headers)}"
            )
        self.rows.append([fmt(c) for c in cells])

    def render(self) -> str:
        """The table as Markdown, title and note included."""
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        out = [f"### {self.title}", ""]
        if self.note:
            out += [self.note, ""]
        out.append(line(self.headers))
        out.append("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
        out += [line(r) for r in self.rows]
        return "\n".join(out) + "\n"


def machine() -> str:
    """One line on where the numbers come from: CPU, cores, Python, library versions."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = []
    for name in (
        "uvicorn",
        "uvloop",
        "starlette",
        "websockets",
        "orjson",
        "broadcaster",
        "blinker",
        "django",
        "redis",
    ):
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            versions.append(f"{name} -")
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; " + ", ".join(versions)
    )
