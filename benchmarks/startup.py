"""Start-up: one photo through ``facepoints predict --json`` in a fresh process, beside
a bare ``python -c "import numpy, cv2, onnxruntime, PIL.Image"`` (the floor any
ONNX Runtime + OpenCV tool pays), interleaved in one run so that both see the same
machine; the ratio of the medians is the number (issue bar: at most 3x).

    python benchmarks/startup.py [--repeats 15] [--image examples/astronaut.jpg] [--out benchmarks/startup.md]

Warm disk cache (one untimed run of each first). The predict process must not import
torch (checked: it runs with ``-X importtime`` once and the result is reported).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from facepoints.evaluation.machine import command_line, report_header

ROOT = Path(__file__).resolve().parents[1]


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--image", default="examples/astronaut.jpg")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "startup.md")
    ap.add_argument("--note", default="", help="a sentence on the machine's state, put in the result")
    args = ap.parse_args(argv)
    exe = shutil.which("facepoints") or str(Path(sys.executable).with_name("facepoints"))
    commands = {
        "bare imports": [sys.executable, "-c", "import numpy, cv2, onnxruntime, PIL.Image"],
        "facepoints predict (default model)": [exe, "predict", args.image, "--json"],
        "facepoints predict --model fast": [exe, "predict", args.image, "--json", "--model", "fast"],
    }
    for cmd in commands.values():  # warm the disk cache
        wall(cmd)
    times: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(args.repeats):
        for k, cmd in commands.items():
            times[k].append(wall(cmd))
    probe = subprocess.run([sys.executable, "-X", "importtime", "-m", "facepoints.cli", "predict", args.image, "--json"],
                           capture_output=True, text=True, cwd=ROOT)
    torch_imported = any(line.rstrip().endswith(("| torch", "| torchvision")) for line in probe.stderr.splitlines())
    base = statistics.median(times["bare imports"])
    cmd_line = command_line(__file__, argv)
    lines = [
        *report_header("Start-up: one photo in a fresh process", cmd_line, "shared CPU"),
        f"{args.repeats} rounds, the three commands interleaved in each; warm disk cache; wall time of the whole "
        f"process (interpreter start, imports, model load, detection, landmarks, JSON out) on `{args.image}`. "
        + args.note,
        "",
        "| command | median s | min s | max s | x bare imports |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, v in times.items():
        m = statistics.median(v)
        lines.append(f"| {k} | {m:.3f} | {min(v):.3f} | {max(v):.3f} | {m / base:.2f} |")
    lines += ["", f"torch imported by `facepoints predict`: {'yes' if torch_imported else 'no'} "
              "(`python -X importtime -m facepoints.cli predict ...`)."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
