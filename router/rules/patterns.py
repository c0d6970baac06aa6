"""Value patterns used in ``when`` blocks.

- plain text: equal, ignoring case and surrounding spaces (DICOM pads values with spaces);
- ``*`` and ``?`` wildcards: any run of characters / exactly one character, ignoring case;
- ``re:<regex>``: a Python regular expression that must match the whole value (case-sensitive unless the
  expression says ``(?i)``);
- ``null`` (YAML ``~``) or ``""``: the attribute is absent or empty.

For a multi-valued attribute (``ImageType``) a pattern matches when it matches any single value or the
whole value with its backslashes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class PatternError(ValueError):
    pass


@dataclass(frozen=True)
class Pattern:
    text: str
    regex: re.Pattern[str] | None  # None means "absent or empty"

    def matches(self, values: list[str]) -> bool:
        """``values`` are the attribute's values (empty list when absent)."""
        cleaned = [v.strip() for v in values]
        if self.regex is None:
            return all(v == "" for v in cleaned)
        candidates = [*cleaned, "\\".join(cleaned)] if len(cleaned) > 1 else cleaned
        return any(self.regex.fullmatch(v) for v in candidates)


def compile_pattern(value: object) -> Pattern:
    if value is None or value == "":
        return Pattern("", None)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PatternError(f"a pattern must be text or a number, not {type(value).__name__}")
    text = str(value)
    if text.startswith("re:"):
        try:
            return Pattern(text, re.compile(text[3:]))
        except re.error as exc:
            raise PatternError(f"bad regular expression {text[3:]!r}: {exc}") from None
    parts = []
    for ch in text.strip():
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return Pattern(text, re.compile("".join(parts), re.IGNORECASE | re.DOTALL))


def compile_any_of(value: object) -> tuple[Pattern, ...]:
    """A single pattern or a list of them (any of)."""
    if isinstance(value, list):
        if not value:
            raise PatternError("an empty list matches nothing; remove the key instead")
        return tuple(compile_pattern(v) for v in value)
    return (compile_pattern(value),)


def any_matches(patterns: tuple[Pattern, ...], values: list[str]) -> bool:
    return any(p.matches(values) for p in patterns)
