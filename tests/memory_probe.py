"""The router's resident memory, and the multi-frame object the memory tests send (tests/test_stow_memory.py,
tests/test_cstore_memory.py)."""

from __future__ import annotations

from pathlib import Path

MF_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word Secondary Capture Image Storage
FRAME = 512 * 512 * 2
FRAMES = 400  # 400 frames of 512 KiB: 200 MiB of pixel data


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in bytes."""
    fields = (line.partition(":") for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {key: int(value.split()[0]) * 1024 for key, _, value in fields if key in ("VmRSS", "VmHWM")}
