"""ER7 ("pipe and hat") encoding: separators, splitting, escape sequences and character sets.

Pure functions with no hl7apy dependency. The field helpers of :class:`router.hl7.message.Hl7Message` are built on
these, so they work for every segment, including Z-segments hl7apy does not know, and with any encoding characters
a sender declares in MSH-1/MSH-2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# HL7 table 0211 (alternate character sets) values we decode, with their Python codec. Every one of them is
# ASCII-compatible, so MSH can be read from the raw bytes before the message is decoded.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    **{f"8859/{n}": f"iso8859-{n}" for n in range(1, 10)},
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
}
LENIENT_CHARSETS = ("", "ASCII")  # declared ASCII or nothing: UTF-8, then Latin-1 bytes are tolerated


@dataclass(frozen=True)
class EncodingChars:
    """The delimiters of one message: MSH-1 and MSH-2 (truncation, the optional fifth character, from v2.7)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @property
    def msh2(self) -> str:
        """MSH-2 exactly as it is written in a message."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation

    @classmethod
    def from_msh(cls, field: str, msh2: str, version: str) -> EncodingChars:
        """Validate MSH-1/MSH-2; ``version`` (MSH-12.1) decides whether a fifth (truncation) character is allowed.

        Raises ``ValueError`` naming what is wrong.
        """
        if not _is_delimiter(field):
            raise ValueError(f"field separator {field!r} is not a printable, non-alphanumeric character")
        if len(msh2) == 5 and not _version_at_least(version, (2, 7)):
            raise ValueError("a fifth encoding character (truncation) is only allowed from version 2.7")
        if len(msh2) not in (4, 5):
            raise ValueError(f"MSH-2 must hold 4 encoding characters (5 from v2.7), found {len(msh2)}")
        bad = [c for c in msh2 if not _is_delimiter(c)]
        if bad:
            raise ValueError(f"encoding character {bad[0]!r} is not a printable, non-alphanumeric character")
        if len(set(field + msh2)) != len(msh2) + 1:
            raise ValueError("the field separator and the encoding characters must all differ")
        return cls(field, msh2[0], msh2[1], msh2[2], msh2[3], msh2[4:])

    def hl7apy(self) -> dict[str, str]:
        """The ``encoding_chars`` mapping hl7apy uses."""
        chars = {
            "FIELD": self.field,
            "COMPONENT": self.component,
            "REPETITION": self.repetition,
            "ESCAPE": self.escape,
            "SUBCOMPONENT": self.subcomponent,
            "SEGMENT": "\r",
            "GROUP": "\r",
        }
        if self.truncation:
            chars["TRUNCATION"] = self.truncation
        return chars


DEFAULT_ENCODING = EncodingChars()


def _is_delimiter(c: str) -> bool:
    return len(c) == 1 and "!" <= c <= "~" and not c.isalnum()


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.5.1"`` -> ``(2, 5, 1)``; anything unreadable -> ``()``."""
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return ()


def _version_at_least(version: str, minimum: tuple[int, ...]) -> bool:
    return version_tuple(version) >= minimum


def split_segments(text: str) -> list[str]:
    """Split on CR, tolerating LF and CRLF; blank lines are dropped."""
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    return [s for s in text.split("\r") if s.strip()]


def segment_fields(segment: str, enc: EncodingChars) -> tuple[str, ...]:
    """Raw fields of one segment, indexed by HL7 field number: ``fields[0]`` is the segment ID.

    For MSH, ``fields[1]`` is the field separator and ``fields[2]`` the encoding characters, so ``fields[n]`` is
    MSH-n there too.
    """
    parts = segment.split(enc.field)
    if parts[0] == "MSH":
        parts.insert(1, enc.field)
    return tuple(parts)


_NAMED = {"F": "field", "S": "component", "T": "subcomponent", "R": "repetition", "E": "escape", "P": "truncation"}


def unescape(value: str, enc: EncodingChars, codec: str = "utf-8") -> str:
    """Resolve HL7 escape sequences (chapter 2.7).

    ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` (and ``\\P\\`` from v2.7) become the delimiters, ``\\Xhh..\\`` the bytes it
    names decoded with the message's ``codec``, ``\\.br\\`` a line feed; highlighting (``\\H\\``, ``\\N\\``) is
    dropped. Anything else (character-set switches, ``\\Z..\\``, other formatting commands, an unterminated
    sequence) is kept verbatim.
    """
    esc = enc.escape
    if esc not in value:
        return value
    pattern = re.compile(re.escape(esc) + "([^" + re.escape(esc) + "]*)" + re.escape(esc))

    def replace(m: re.Match[str]) -> str:
        seq = m.group(1)
        if seq in _NAMED:
            return getattr(enc, _NAMED[seq]) or m.group(0)
        if seq in ("H", "N"):
            return ""
        if seq == ".br":
            return "\n"
        if len(seq) > 1 and seq[0] == "X" and len(seq) % 2 == 1:
            try:
                return bytes.fromhex(seq[1:]).decode(codec, errors="replace")
            except ValueError:
                return m.group(0)
        return m.group(0)

    return pattern.sub(replace, value)


def escape(value: str, enc: EncodingChars) -> str:
    """Escape free text for one ER7 value: delimiters become ``\\F\\`` etc., CR/LF become ``\\X0D\\``/``\\X0A\\``."""
    e = enc.escape
    out = value.replace(e, f"{e}E{e}")
    for char, code in ((enc.field, "F"), (enc.component, "S"), (enc.subcomponent, "T"), (enc.repetition, "R")):
        out = out.replace(char, f"{e}{code}{e}")
    if enc.truncation:
        out = out.replace(enc.truncation, f"{e}P{e}")
    return out.replace("\r", f"{e}X0D{e}").replace("\n", f"{e}X0A{e}")


def split_value(field: str, enc: EncodingChars, codec: str = "utf-8") -> list[list[list[str]]]:
    """A raw field as repetitions -> components -> subcomponents, each unescaped. An empty field is ``[]``."""
    if field == "":
        return []
    return [
        [[unescape(sub, enc, codec) for sub in comp.split(enc.subcomponent)] for comp in rep.split(enc.component)]
        for rep in field.split(enc.repetition)
    ]


def decode(raw: bytes, charset: str) -> tuple[str, str]:
    """Decode message bytes per MSH-18; returns ``(text, codec used)``.

    ``charset`` must be empty or a key of :data:`CHARSETS` (the caller reports unknown values). Empty or ``ASCII``
    is decoded leniently: ASCII, else UTF-8, else Latin-1 (which cannot fail). A declared 8-bit set or UTF-8
    is strict; ``UnicodeDecodeError`` is raised when the bytes do not fit it.
    """
    if charset in LENIENT_CHARSETS:
        for codec in ("ascii", "utf-8"):
            try:
                return raw.decode(codec), codec
            except UnicodeDecodeError:
                continue
        return raw.decode("latin-1"), "latin-1"
    codec = CHARSETS[charset]
    return raw.decode(codec), codec
