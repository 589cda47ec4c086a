"""How validation NME falls with the number of 300-W training faces, at a fixed budget.

    python benchmarks/data_scaling.py train   # trains the missing rows (resumable)
    python benchmarks/data_scaling.py table   # writes benchmarks/data_scaling.md

Every row trains ``configs/data-scaling.yaml`` (the ablation recipe on the 300-W faces
alone) on a random subset of the training faces (``data.subset``, seed 0) for about the
same number of optimiser steps (more epochs for fewer faces), and is scored on the same
held-out 300-W photos (centre crops from the ground-truth box, no flip, best epoch). A
power law ``NME = a * n^b`` fitted to the rows (least squares in log-log) says roughly
what more human-labelled 300-W faces would buy; it is an extrapolation from three
points of one short recipe, not a measurement.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import best_epoch  # noqa: E402

from facepoints.evaluation.machine import cpu_name  # noqa: E402

CONFIG = "configs/data-scaling.yaml"
RUNS = Path("runs/data-scaling")
FULL_300W_TRAIN = 3148  # AFW 337 + HELEN 2,000 + LFPW 811: the standard 300-W training set
# name, training faces (None: all), epochs (about 610-650 steps of 32 each row)
ROWS: list[tuple[str, int | None, int]] = [("quarter", 267, 72), ("half", 534, 36), ("all", None, 18)]


def command(name: str, subset: int | None, epochs: int) -> list[str]:
    cmd = ["facepoints", "train", CONFIG, "--output", str(RUNS / name), "--set", f"optim.epochs={epochs}"]
    if subset is not None:
        cmd += ["--set", f"data.subset={subset}"]
    return cmd


def train() -> None:
    for name, subset, epochs in ROWS:
        out = RUNS / name
        if (out / "final.safetensors").exists():
            print(f"{name}: done")
            continue
        cmd = command(name, subset, epochs) + (["--resume"] if (out / "last.pt").exists() else [])
        print("$", shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True)


def all_train_faces() -> int:
    """Training faces of the config's split (all of them: the last row)."""
    from facepoints.training.config import load_config
    from facepoints.training.loop import make_splits

    return len(make_splits(load_config(CONFIG)).train.samples)


def table(out: Path) -> None:
    rows = []
    for name, subset, epochs in ROWS:
        best = best_epoch(RUNS / name)
        if best is None:
            raise SystemExit(f"{RUNS / name}: not trained yet (python benchmarks/data_scaling.py train)")
        rows.append((name, subset, epochs, best))
    n = np.array([r[1] if r[1] is not None else all_train_faces() for r in rows], float)
    nme = np.array([r[3]["val_nme_io"] for r in rows])
    b, log_a = np.polyfit(np.log(n), np.log(nme), 1)
    predict = lambda k: float(np.exp(log_a) * k ** b)  # noqa: E731
    lines = [
        "# Data scaling: validation NME vs number of 300-W training faces",
        "",
        f"Generated {datetime.date.today()} by `python benchmarks/data_scaling.py table` on {cpu_name()} "
        "(2 shared CPU cores, no GPU).",
        "",
        __doc__.split("\n\n", 2)[2].replace("\n", " ").strip(),
        "",
        "| row | 300-W training faces | epochs | steps | val NME io % | FR@0.1 % | command |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for (name, subset, epochs, best), k in zip(rows, n):
        lines.append(f"| {name} | {int(k)} | {epochs} | {best['steps']} | {best['val_nme_io']:.2f} | "
                     f"{best['val_fr10']:.2f} | `{shlex.join(command(name, subset, epochs))}` |")
    lines += [
        "",
        f"Fit: NME = {np.exp(log_a):.1f} * n^{b:.3f} (each doubling of the faces multiplies NME by "
        f"{2 ** b:.3f}). At this recipe it predicts {predict(n[-1] * 2):.2f} % for twice the faces here and "
        f"{predict(FULL_300W_TRAIN):.2f} % for the full 300-W training set ({FULL_300W_TRAIN:,} faces), "
        f"against {nme[-1]:.2f} % measured with all {int(n[-1])}.",
    ]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["train", "table"])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/data_scaling.md"))
    a = ap.parse_args(argv)
    train() if a.action == "train" else table(a.out)


if __name__ == "__main__":
    main()
