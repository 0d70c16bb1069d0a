"""Checks of numeric arguments: integers (numpy's too, never bools) and finite reals in a range.

>>> integer("epochs", np.int64(3))
3
>>> real("lr_decay", 0.5, "(0, 1]")
0.5
>>> real("learning_rate", float("nan"), "(0, inf)")
Traceback (most recent call last):
...
ValueError: `learning_rate` must be a finite positive number. Received: learning_rate=nan
"""

from __future__ import annotations

import math
import numbers

import numpy as np

WORDS = {"(0, inf)": "a finite positive number", "[0, inf)": "a finite number >= 0"}


def is_integer(value):
    """Whether `value` is an integer (Python's or numpy's), and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def integer(name, value, *, minimum=0):
    """`value` as an `int`, if it is an integer >= `minimum`; else a `ValueError` naming `name`."""
    if not is_integer(value) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def real(name, value, interval):
    """`value` as a `float`, if it is a finite number in `interval` (e.g. `"(0, 1]"`, `"[0, inf)"`).

    Rejects NaN, infinities and bools, with a `ValueError` naming `name`.
    """
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    number = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if (
        not number
        or not math.isfinite(value)
        or (value <= low if interval[0] == "(" else value < low)
        or (value >= high if interval[-1] == ")" else value > high)
    ):
        kind = WORDS.get(interval, f"a finite number in {interval}")
        raise ValueError(f"`{name}` must be {kind}. Received: {name}={value!r}")
    return float(value)
