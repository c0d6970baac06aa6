"""Segments of a parsed message, read by HL7 position, in wire order (ORC starts an order group, etc.).

A thin view over :class:`router.hl7.message.Hl7Message` ``segment_list``: ``seg.get(3, comp=4, rep=2, sub=2)``
is PID-3, second repetition, component 4, subcomponent 2, unescaped. An absent value is ``""``; the HL7 null
``""`` comes back as ``'""'`` so an update can tell "clear this" from "not sent".
"""

from __future__ import annotations

from dataclasses import dataclass

from router.hl7 import er7
from router.hl7.message import Hl7Message

HL7_NULL = '""'


@dataclass(frozen=True)
class Segment:
    name: str
    fields: tuple[str, ...]  # fields[n] is HL7 field n, still escaped; fields[0] is the segment ID
    enc: er7.EncodingChars = er7.DEFAULT_ENCODING
    codec: str = "utf-8"

    def raw(self, field: int) -> str:
        return self.fields[field] if 0 <= field < len(self.fields) else ""

    def repetitions(self, field: int) -> int:
        return len(er7.split_value(self.raw(field), self.enc, self.codec))

    def get(self, field: int, comp: int = 1, rep: int = 1, sub: int = 1) -> str:
        if self.name == "MSH" and field in (1, 2):
            return self.raw(field)
        tree = er7.split_value(self.raw(field), self.enc, self.codec)
        try:
            return tree[rep - 1][comp - 1][sub - 1].strip()
        except IndexError:
            return ""


def segments_of(message: Hl7Message) -> list[Segment]:
    return [Segment(fields[0], fields, message.encoding, message.codec) for fields in message.segment_list]
