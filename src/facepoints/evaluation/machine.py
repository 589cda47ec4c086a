"""What machine a benchmark ran on, for the header of its committed results."""

from __future__ import annotations

import platform
from pathlib import Path


def _cpuinfo(key: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU model ("AMD EPYC ..."), or what ``platform`` knows."""
    return _cpuinfo("model name") or platform.processor() or "unknown CPU"


def cpu_flags() -> str:
    """The vector-instruction flags that decide int8/bf16/fp16 speed (AVX*, AMX, VNNI, BF16, F16C)."""
    flags = (_cpuinfo("flags") or "").split()
    keep = [f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f or "bf16" in f or f == "f16c"]
    return " ".join(keep) if flags else "?"


def report_header(title: str, command: str, note: str = "") -> list[str]:
    """The lines every committed benchmark result starts with: title, the command that
    made it, the date and the machine (one writer for all of them)."""
    import datetime
    import os

    return [f"# {title}", "", f"Command: `{command}`  ", f"Date: {datetime.date.today()}  ",
            f"Machine: {cpu_name()}, {os.cpu_count()} cores ({cpu_flags()})" + (f"; {note}" if note else ""), ""]
