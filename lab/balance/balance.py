"""Does balancing training by yaw help the turned faces? NME by yaw bucket on the
held-out validation split, for two model files: one trained without ``data.balance``
and one trained with it (same data, same seed, so the same validation split).

    python lab/balance/balance.py --config lab/baselines/default.yaml \\
        --without runs/default/best.safetensors --with runs/balanced/best.safetensors

Each validation face is put in a bucket by the absolute yaw of its ground-truth
landmarks (``facepoints.data.pose``, generic 3-D face); every model sees the same
faces with the ground-truth landmark box (the standard protocol, as in
benchmarks/compare.py). Writes a markdown table to --out.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

import facepoints
from facepoints.data.images import read_image
from facepoints.data.pose import dataset_poses
from facepoints.data.samples import landmark_box
from facepoints.evaluation.metrics import failure_rate, nme
from facepoints.training.config import load_config
from facepoints.training.loop import make_splits


def bucket_names(edges: list[float]) -> list[str]:
    return [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:])] + [f">{edges[-1]:g}"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="lab/baselines/default.yaml", help="the config whose validation split to use")
    ap.add_argument("--without", required=True, help="model file trained without data.balance")
    ap.add_argument("--with", dest="with_", required=True, help="model file trained with data.balance")
    ap.add_argument("--edges", default="0,15,30,45", help="|yaw| bucket edges in degrees; the last bucket is open")
    ap.add_argument("--limit", type=int, default=None, help="at most this many validation faces (smoke runs)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="lab/balance/balance.md")
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    val = make_splits(cfg).val
    samples = val.samples[: args.limit] if args.limit else val.samples
    edges = [float(e) for e in args.edges.split(",")]
    yaw = np.abs(dataset_poses(samples, val.scheme).yaw)
    bucket = np.searchsorted(edges, yaw, side="right") - 1  # NaN (no pose) sorts past the end
    bucket[~np.isfinite(yaw)] = -1
    gt = np.stack([s.landmarks for s in samples])
    images = [read_image(s.image) for s in samples]
    boxes = [landmark_box(s.landmarks) for s in samples]
    errors = {}
    for name, path in (("without balance", args.without), ("with balance", args.with_)):
        p = facepoints.load(path, detector=None, threads=args.threads, refine=0)
        pred = np.stack([p.landmarks_in_boxes(img, b[None])[0] for img, b in zip(images, boxes)])
        errors[name] = nme(pred, gt, val.scheme, "io")

    names = bucket_names(edges)
    lines = ["| abs(yaw) bucket (deg) | faces | " + " | ".join(f"NME io % {m}" for m in errors) + " | "
             + " | ".join(f"FR@0.1 % {m}" for m in errors) + " |",
             "|---|---:|" + "---:|" * (2 * len(errors))]
    rows = [(names[b], bucket == b) for b in range(len(names))] + [("all", bucket >= 0)]
    if (bucket < 0).any():
        rows.insert(-1, ("no pose", bucket < 0))
    for label, m in rows:
        if not m.any():
            lines.append(f"| {label} | 0 |" + " |" * (2 * len(errors)))
            continue
        lines.append(f"| {label} | {int(m.sum())} | "
                     + " | ".join(f"{e[m].mean() * 100:.2f}" for e in errors.values()) + " | "
                     + " | ".join(f"{failure_rate(e[m]) * 100:.2f}" for e in errors.values()) + " |")
    print("\n".join(lines))
    head = [
        "# Balance by yaw: NME by yaw bucket\n",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Date: {datetime.date.today()}  ",
        f"Models: without balance `{args.without}`, with balance `{args.with_}`.  ",
        f"Validation split of `{args.config}` (seed {cfg.seed}, val_fraction {cfg.data.val_fraction}), "
        f"{len(samples)} faces, ground-truth landmark box. NME in percent of the outer-eye-corner distance.\n",
    ]
    Path(args.out).write_text("\n".join(head + lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
