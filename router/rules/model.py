"""Rules as data: what a rule file says, after validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from router.rules.patterns import Pattern


@dataclass(frozen=True)
class StageCall:
    stage: str
    args: Any
    where: str  # "file:line", for messages


@dataclass(frozen=True)
class Condition:
    """The ``when`` block. Every present key must match; absent keys match anything."""

    kinds: tuple[str, ...] = ()
    calling_ae: tuple[Pattern, ...] = ()
    called_ae: tuple[Pattern, ...] = ()
    source: tuple[Pattern, ...] = ()  # how it came in: dimse, stow, mllp, media (router import), file (rules test)
    sop_class: tuple[Pattern, ...] = ()
    message: tuple[Pattern, ...] = ()  # HL7 message type, e.g. ADT^A08
    tags: tuple[tuple[int, str, tuple[Pattern, ...]], ...] = ()  # (tag, keyword, any-of patterns)


@dataclass(frozen=True)
class Rule:
    name: str
    when: Condition
    then: tuple[StageCall, ...]
    stop: bool = False
    where: str = ""


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    files: tuple[str, ...] = ()
    signature: tuple[tuple[str, float, int], ...] = field(default=(), compare=False)
