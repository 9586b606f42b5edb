"""Checks of option values, shared by every class that takes options.

Python's rule, kept everywhere: a value of the wrong type raises TypeError, a value of the
right type out of range raises ValueError; both name the option and the value given.
"""

from __future__ import annotations

__all__ = ["number", "seconds", "whole_number"]


def whole_number(
    name: str, value: object, *, minimum: int = 1, optional: bool = False, why: str = ""
) -> None:
    """Raise unless ``value`` is an int (not a bool) of at least ``minimum`` (or None if
    ``optional``); ``why``, when given, follows the minimum in the ValueError's message."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        none = " or None (the default)" if optional else ""
        raise TypeError(f"{name} must be a whole number{none}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}{why}, got {value}")


def seconds(name: str, value: object, *, optional: bool = False, zero: bool = False) -> None:
    """Raise unless ``value`` is a number (not a bool) of seconds above 0 (or 0 if ``zero``),
    or None if ``optional``. NaN is out of range."""
    if value is None and optional:
        return
    none = " or None (the default)" if optional else ""
    value = number(name, value, what=f"a number of seconds{none}")
    if not (value >= 0 if zero else value > 0):
        bound = "0 seconds or more" if zero else "more than 0 seconds"
        raise ValueError(f"{name} must be {bound}, got {value}")


def number(name: str, value: object, *, what: str = "a number") -> float:
    """``value``, unless it is not an int or a float (or is a bool): TypeError. The range is
    the caller's to check, with its own message. ``what`` names the kind in the message."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    return value
