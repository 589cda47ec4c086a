"""How validation NME falls with the number of 300-W training faces, at a fixed budget.

    python lab/data-scaling/data_scaling.py train   # trains the missing rows (resumable)
    python lab/data-scaling/data_scaling.py table   # writes lab/data-scaling/data_scaling.md

Every row trains ``lab/data-scaling/data-scaling.yaml`` (the ablation recipe on the 300-W faces
alone) on a random subset of the training faces (``data.subset``, seed 0) long enough
to level off: at least 36 epochs and at least 576 optimiser steps (the quarter gets 72
epochs). All rows are scored on the same held-out 300-W photos (centre crops from the
ground-truth box, no flip) at the last epoch (the best epoch is shown too, but a row
with more epochs has more chances to pick a lucky one). The row ``all-short`` has the
steps of the quarter and half rows (18 epochs): its NME was still falling at its last
epoch, so at that budget the steps, not the faces, limit it; it is shown, not fitted. A
power law ``NME = a * n^b`` fitted to the other rows (least squares in log-log) says
roughly what more human-labelled 300-W faces would buy; it is an extrapolation from
three points of one short recipe and one seed, not a measurement.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ablation"))
from ablation import best_epoch, train_run, validated_epochs, write_keeping_reading  # noqa: E402

from facepoints.evaluation.machine import cpu_name  # noqa: E402

CONFIG = "lab/data-scaling/data-scaling.yaml"
RUNS = Path("runs/data-scaling")
FULL_300W_TRAIN = 3148  # AFW 337 + HELEN 2,000 + LFPW 811: the standard 300-W training set
# name, training faces (None: all), epochs, in the fit (batches of 32; an epoch's last partial batch is not used)
ROWS: list[tuple[str, int | None, int, bool]] = [
    ("quarter", 267, 72, True),      # 576 steps
    ("half", 534, 36, True),         # 576 steps
    ("all", None, 36, True),         # 1,188 steps
    ("all-short", None, 18, False),  # 594 steps: the quarter's and half's budget
]


def command(name: str, subset: int | None, epochs: int) -> list[str]:
    cmd = ["facepoints", "train", CONFIG, "--output", str(RUNS / name), "--set", f"optim.epochs={epochs}"]
    if subset is not None:
        cmd += ["--set", f"data.subset={subset}"]
    return cmd


def train() -> None:
    for name, subset, epochs, _ in ROWS:
        train_run(RUNS / name, command(name, subset, epochs))


def all_train_faces() -> int:
    """Training faces of the config's split (all of them: the last row)."""
    from facepoints.training.config import load_config
    from facepoints.training.loop import make_splits

    return len(make_splits(load_config(CONFIG)).train.samples)


def table(out: Path) -> None:
    rows = []
    for name, subset, epochs, fit in ROWS:
        best = best_epoch(RUNS / name)
        if best is None:
            raise SystemExit(f"{RUNS / name}: not trained yet (python lab/data-scaling/data_scaling.py train)")
        rows.append((name, subset, epochs, fit, best, validated_epochs(RUNS / name)[-1]))
    n = np.array([r[1] if r[1] is not None else all_train_faces() for r in rows], float)
    nme = np.array([r[5]["val_nme_io"] for r in rows])
    fitted = np.array([r[3] for r in rows])
    b, log_a = np.polyfit(np.log(n[fitted]), np.log(nme[fitted]), 1)
    predict = lambda k: float(np.exp(log_a) * k ** b)  # noqa: E731
    i = [r[0] for r in rows].index("all")
    lines = [
        "# Data scaling: validation NME vs number of 300-W training faces",
        "",
        f"Generated {datetime.date.today()} by `python lab/data-scaling/data_scaling.py table` on {cpu_name()} "
        "(2 shared CPU cores, no GPU).",
        "",
        __doc__.split("\n\n", 2)[2].replace("\n", " ").strip(),
        "",
        "| row | 300-W training faces | epochs | steps | in the fit | val NME io % (last epoch) | FR@0.1 % (last) | "
        "val NME io % (best epoch) | command |",
        "|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for (name, subset, epochs, fit, best, last), k in zip(rows, n):
        lines.append(f"| {name} | {int(k)} | {epochs} | {best['steps']} | {'yes' if fit else 'no'} | "
                     f"{last['val_nme_io']:.2f} | "
                     f"{last['val_fr10']:.2f} | {best['val_nme_io']:.2f} (epoch {best['epoch']}) | "
                     f"`{shlex.join(command(name, subset, epochs))}` |")
    lines += [
        "",
        f"Fit: NME = {np.exp(log_a):.1f} * n^{b:.3f} (each doubling of the faces multiplies NME by "
        f"{2 ** b:.3f}). At this recipe it predicts {predict(n[i] * 2):.2f} % for twice the faces here and "
        f"{predict(FULL_300W_TRAIN):.2f} % for the full 300-W training set ({FULL_300W_TRAIN:,} faces), "
        f"against {nme[i]:.2f} % measured with all {int(n[i])}.",
    ]
    write_keeping_reading(out, lines)
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["train", "table"])
    ap.add_argument("--out", type=Path, default=Path("lab/data-scaling/data_scaling.md"))
    a = ap.parse_args(argv)
    train() if a.action == "train" else table(a.out)


if __name__ == "__main__":
    main()
