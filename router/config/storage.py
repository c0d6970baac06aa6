"""The ``storage`` section: keep every stored object (``archive``) or keep a cache under two water marks.

A mark is a size (``500GB``; units B, KB, MB, GB, TB are powers of 1000, KiB, MiB, GiB, TiB powers of 1024; a bare
number is bytes) or a percentage of the file system that holds ``data_dir`` (``90%``). It is compared with the
space the stored objects take (the sum of their sizes in the index), see docs/storage.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from router.config.base import Strict
from router.config.s3 import S3Settings

UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip
_MARK = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|[A-Za-z]*)\s*$")
_UNIT_HELP = "B, KB, MB, GB, TB (powers of 1000), KiB, MiB, GiB, TiB (powers of 1024), or % of the file system"


@dataclass(frozen=True)
class Mark:
    """A water mark: ``size`` bytes, or ``percent`` of the file system's size."""

    size: int | None = None
    percent: float | None = None

    def resolve(self, filesystem_size: int) -> int:
        """The mark in bytes, for a file system of ``filesystem_size`` bytes."""
        if self.size is not None:
            return self.size
        return int(filesystem_size * (self.percent or 0.0) / 100)


def parse_mark(text: str) -> Mark:
    """``500GB``, ``1.5 TiB``, ``1048576`` or ``90%``; a ValueError says what is accepted."""
    found = _MARK.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a size: a number and a unit ({_UNIT_HELP}), e.g. 500GB or 90%")
    number, unit = float(found.group(1)), found.group(2)
    if unit == "%":
        if not 0 <= number <= 100:
            raise ValueError(f"{text!r}: a percentage of the file system is between 0% and 100%")
        return Mark(percent=number)
    factor = UNITS.get(unit.upper() or "B")
    if factor is None:
        raise ValueError(f"unknown unit {unit!r} in {text!r}: use {_UNIT_HELP}")
    return Mark(size=int(number * factor))


def _amount(mark: Mark) -> float:
    return float(mark.size if mark.size is not None else mark.percent or 0.0)


class StorageSettings(Strict):
    mode: Literal["archive", "cache"] = Field(
        "archive", description="archive: keep every stored object; cache: evict patients above high_water"
    )
    high_water: str = Field("90%", description="cache mode: evict when the stored objects take more than this")
    low_water: str | None = Field(
        None, description="cache mode: evict least recently used patients until below this; null: 80 % of high_water"
    )
    keep_days: float | None = Field(None, gt=0, description="evict objects received longer ago (any mode)")
    check_interval: float = Field(60.0, gt=0, le=60, description="seconds between checks (besides after each store)")
    s3: S3Settings | None = Field(None, description="keep objects in this S3-compatible bucket; null: in data_dir")
    journal: bool = Field(
        True,
        description="small objects acknowledged after one flush of a write-ahead journal instead of three "
        "(SQLite and the data_dir folder on Linux only; docs/storage.md)",
    )

    @field_validator("high_water", "low_water", mode="before")
    @classmethod
    def _size_text(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("high_water")
    @classmethod
    def _high_is_a_mark(cls, value: str) -> str:
        if _amount(parse_mark(value)) <= 0:
            raise ValueError("the high-water mark must be above zero")
        return value

    @field_validator("low_water")
    @classmethod
    def _low_below_high(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        low = parse_mark(value)
        high_text = info.data.get("high_water")
        if high_text is None:  # high_water itself was refused: that error is reported
            return value
        high = parse_mark(high_text)
        if (low.size is None) != (high.size is None):
            raise ValueError(f"give both marks as sizes or both as percentages (high_water is {high_text!r})")
        if _amount(low) >= _amount(high):
            raise ValueError(f"low_water {value!r} must be below high_water {high_text!r}")
        return value

    @property
    def high(self) -> Mark:
        return parse_mark(self.high_water)

    @property
    def low(self) -> Mark:
        if self.low_water is not None:
            return parse_mark(self.low_water)
        high = self.high
        if high.size is not None:
            return Mark(size=high.size * 4 // 5)
        return Mark(percent=(high.percent or 0.0) * 0.8)
