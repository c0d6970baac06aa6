"""Pure matching: which rules apply to an object. No I/O, trivial to unit-test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from router.rules.model import Condition, Rule, RuleSet
from router.rules.patterns import any_matches


@dataclass(frozen=True)
class Subject:
    """The facts a ``when`` block can test."""

    kind: str
    calling_ae: str = ""
    called_ae: str = ""
    source: str = ""  # the envelope's Source.protocol: dimse, stow, mllp, media, file
    sop_class: str = ""
    message: str = ""
    values: Callable[[int], list[str]] = lambda tag: []


def dataset_values(ds: Dataset) -> Callable[[int], list[str]]:
    """Values of a top-level attribute as text (empty list when absent or a sequence)."""

    def get(tag: int) -> list[str]:
        elem = ds.get(tag)
        if elem is None or elem.value is None or isinstance(elem.value, Sequence):
            return []
        value = elem.value
        if isinstance(value, MultiValue | list | tuple):
            return [str(v) for v in value]
        if isinstance(value, bytes):
            return [value.decode("latin-1")]
        return [str(value)]

    return get


def condition_matches(cond: Condition, subject: Subject) -> bool:
    if cond.kinds and subject.kind not in cond.kinds:
        return False
    if cond.calling_ae and not any_matches(cond.calling_ae, [subject.calling_ae]):
        return False
    if cond.called_ae and not any_matches(cond.called_ae, [subject.called_ae]):
        return False
    if cond.source and not any_matches(cond.source, [subject.source]):
        return False
    if cond.sop_class and not any_matches(cond.sop_class, [subject.sop_class]):
        return False
    if cond.message and not any_matches(cond.message, [subject.message]):
        return False
    return all(any_matches(patterns, subject.values(tag)) for tag, _kw, patterns in cond.tags)


def matching_rules(ruleset: RuleSet, subject: Subject) -> list[Rule]:
    """Every rule whose condition holds, in order, up to and including the first with ``stop: true``."""
    chosen: list[Rule] = []
    for rule in ruleset.rules:
        if condition_matches(rule.when, subject):
            chosen.append(rule)
            if rule.stop:
                break
    return chosen
