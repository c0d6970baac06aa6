"""The dashboard's per-minute chart as SVG geometry (drawn by ``templates/_chart.html``): no script, no inline
style (the Content-Security-Policy allows neither), only SVG attributes computed here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WIDTH = 720
HEIGHT = 160
TOP = 12
BOTTOM = 18
SERIES = (("dicom_in", "DICOM in"), ("hl7_in", "HL7 in"), ("dicom_out", "DICOM out"), ("hl7_out", "HL7 out"))


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: str
    title: str


def chart(minutes: list[dict[str, Any]]) -> dict[str, Any]:
    """Four bars per minute (objects and messages, in and out), scaled to the busiest; and the totals."""
    slots = max(len(minutes), 1)
    peak = max([m[s] for m in minutes for s, _ in SERIES] + [1])
    slot_width = WIDTH / slots
    bar_width = max(slot_width / (len(SERIES) + 1), 0.5)
    usable = HEIGHT - TOP - BOTTOM
    bars = []
    for i, minute in enumerate(minutes):
        for j, (series, label) in enumerate(SERIES):
            count = int(minute[series])
            if not count:
                continue
            height = usable * count / peak
            x = i * slot_width + j * bar_width
            bars.append(Bar(round(x, 2), round(TOP + usable - height, 2), round(bar_width, 2), round(height, 2),
                            series, f"{minute['minute']} UTC: {count} {label}"))  # fmt: skip
    totals = {series: sum(int(m[series]) for m in minutes) for series, _ in SERIES}
    labels = [(round(i * slot_width, 2), m["minute"][11:]) for i, m in enumerate(minutes) if i % 10 == 0]
    return {"width": WIDTH, "height": HEIGHT, "bars": bars, "peak": peak, "totals": totals, "series": SERIES,
            "labels": labels, "baseline": HEIGHT - BOTTOM, "top": TOP}  # fmt: skip
