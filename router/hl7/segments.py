"""Reading fields out of an HL7 v2 message by position, whatever its encoding characters.

The application side (ADT, orders) reads values as ``seg.get(3, comp=4, sub=1)``: HL7 positions, 1-based, as
the standard numbers them (MSH-1 is the field separator itself). Values come back unescaped (``\\F\\`` ``\\S\\``
``\\T\\`` ``\\R\\`` ``\\E\\``, ``\\Xhh..\\``); an absent value is ``""``; the HL7 null ``""`` is returned as
``'""'`` so an update can tell "clear this" from "not sent".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HL7_NULL = '""'


@dataclass(frozen=True)
class Separators:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @classmethod
    def from_msh(cls, text: str) -> Separators:
        """From the first four characters after ``MSH``: MSH-1 and MSH-2."""
        field = text[3]
        enc = text[4:].split(field, 1)[0]
        enc = (enc + "^~\\&")[:4] if len(enc) < 4 else enc
        return cls(field, enc[0], enc[1], enc[2], enc[3])


def unescape(value: str, sep: Separators) -> str:
    if sep.escape not in value:
        return value
    e = re.escape(sep.escape)
    names = {"F": sep.field, "S": sep.component, "T": sep.subcomponent, "R": sep.repetition, "E": sep.escape}

    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if code in names:
            return names[code]
        if code.startswith("X") and len(code) > 1 and len(code) % 2 == 1:
            try:
                return bytes.fromhex(code[1:]).decode("latin-1")
            except ValueError:
                return m.group(0)
        if code in (".br", "H", "N"):  # line break; highlighting on/off
            return "\n" if code == ".br" else ""
        return m.group(0)

    return re.sub(f"{e}([^{e}]*){e}", one, value)


@dataclass(frozen=True)
class Segment:
    name: str
    fields: tuple[str, ...]  # fields[n] is HL7 field n, still escaped; fields[0] is the segment name
    sep: Separators

    def raw(self, field: int) -> str:
        return self.fields[field] if field < len(self.fields) else ""

    def repetitions(self, field: int) -> list[str]:
        value = self.raw(field)
        if self.name == "MSH" and field in (1, 2):
            return [value] if value else []
        return [r for r in value.split(self.sep.repetition)] if value else []

    def get(self, field: int, comp: int = 1, rep: int = 1, sub: int = 1) -> str:
        if self.name == "MSH" and field in (1, 2):
            return self.raw(field)
        reps = self.repetitions(field)
        if rep > len(reps):
            return ""
        return component(reps[rep - 1], self.sep, comp, sub)


def component(value: str, sep: Separators, comp: int = 1, sub: int = 1) -> str:
    """Component ``comp`` (subcomponent ``sub``) of one field repetition, unescaped."""
    if value == HL7_NULL:
        return HL7_NULL if comp == 1 and sub == 1 else ""
    comps = value.split(sep.component)
    if comp > len(comps):
        return ""
    subs = comps[comp - 1].split(sep.subcomponent)
    return unescape(subs[sub - 1], sep).strip() if sub <= len(subs) else ""


def split_segments(text: str) -> list[Segment]:
    """Every segment of a decoded message, in order (CR separated; LF and CRLF tolerated)."""
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    if not text.startswith("MSH") or len(text) < 8:
        raise ValueError("a message starts with an MSH segment")
    sep = Separators.from_msh(text)
    out = []
    for line in text.split("\r"):
        if not line.strip():
            continue
        parts = line.split(sep.field)
        if parts[0] == "MSH":  # MSH-1 is the separator itself: shift so that fields[n] is MSH-n
            parts = ["MSH", sep.field, *parts[1:]]
        out.append(Segment(parts[0], tuple(parts), sep))
    return out
