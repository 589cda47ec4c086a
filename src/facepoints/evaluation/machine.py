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


def software() -> str:
    """The versions that decide a benchmark's numbers: Python and the runtimes imported."""
    import sys
    from importlib import metadata

    out = [f"Python {platform.python_version()}"]
    for dist in ("onnxruntime", "opencv-python-headless", "opencv-python", "torch", "numpy"):
        mod = {"onnxruntime": "onnxruntime", "torch": "torch", "numpy": "numpy"}.get(dist, "cv2")
        if mod in sys.modules:
            try:
                out.append(f"{dist} {metadata.version(dist)}")
            except metadata.PackageNotFoundError:
                continue
    return ", ".join(dict.fromkeys(out))


def command_line(script: str, argv: list[str] | None = None, prefix: str = "") -> str:
    """How a benchmark was run, for its report: ``python benchmarks/NAME.py ARGS`` with the
    arguments shell-quoted (an empty ``--detect-sizes ""`` stays visible), the script
    named from the repository root; ``prefix``: environment settings in front."""
    import shlex
    import sys
    from pathlib import Path

    path = Path(script).resolve()
    shown = "/".join(path.parts[-2:]) if path.parent.name == "benchmarks" else path.name
    args = shlex.join(sys.argv[1:] if argv is None else argv)
    return f"{prefix}python {shown}" + (f" {args}" if args else "")


def report_header(title: str, command: str, note: str = "", machine: str | None = None) -> list[str]:
    """The lines every committed benchmark result starts with: title, the command that
    made it, the date, the machine (the CPU unless ``machine`` names another, e.g. a GPU)
    and the software (one writer for all of them). ``note``: how the run was made (threads,
    a busy machine), on the machine line."""
    import datetime
    import os

    where = machine or f"{cpu_name()}, {os.cpu_count()} cores ({cpu_flags()})"
    return [f"# {title}", "", f"Command: `{command}`  ", f"Date: {datetime.date.today()}  ",
            f"Machine: {where}" + (f"; {note}" if note else "") + "  ", f"Software: {software()}", ""]
