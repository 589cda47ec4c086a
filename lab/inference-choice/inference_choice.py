"""Choose a model's inference recipe (flip averaging, refinement passes) on the validation split.

    python lab/inference-choice/inference_choice.py --config configs/default-pip160.yaml \\
        --model runs/default-pip160/best.safetensors --out lab/inference-choice/inference_choice.md

Whole image, as a user runs it: the model file's detector finds the faces (misses are
counted), then every combination of ``--flips`` and ``--refines`` crops and predicts.
NME inter-ocular per validation subset (the split training held out: whole 300-W photos,
whole YTF persons, infant images), and the total time per image on 2 threads (a rough
cost; benchmarks/compare.md times one thread beside dlib and MediaPipe). The recipe
chosen here is what the model file's ``inference`` section records; it is chosen on the
validation split, never on a test set.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np

import facepoints
from facepoints.data.samples import Dataset
from facepoints.evaluation.evaluate import evaluate
from facepoints.evaluation.machine import cpu_name
from facepoints.evaluation.metrics import nme
from facepoints.schemes import IBUG68
from facepoints.training.config import load_config
from facepoints.training.loop import make_splits

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from compare import validation_subsets  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="the training config whose validation split to use")
    ap.add_argument("--model", required=True, help="model file (.safetensors or .onnx)")
    ap.add_argument("--detector", default="auto", help="face detector (default: the model file's)")
    ap.add_argument("--flips", default="0,1", help="flip averaging off (0) / on (1), comma-separated")
    ap.add_argument("--refines", default="0,1", help="refinement passes to try, comma-separated")
    ap.add_argument("--out", type=Path, help="write the table here as markdown")
    args = ap.parse_args(argv)

    subsets = validation_subsets(make_splits(load_config(args.config)).val.samples)
    combos = [(bool(int(f)), int(r)) for f in args.flips.split(",") for r in args.refines.split(",")]
    header = ["flip", "refine", *[f"{t} ({len(s)})" for t, s in subsets.items()], "ms / image"]
    lines = [f"# Inference recipe of `{args.model}` on the validation split of `{args.config}`", "",
             f"Run {datetime.date.today()} on {cpu_name()}: `python lab/inference-choice/inference_choice.py "
             f"{' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"Whole image, detector `{args.detector}` (the model file's when `auto`); NME inter-ocular % "
             "over the faces found, misses in brackets; time per image on 2 threads, detection included.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
    for flip, refine in combos:
        p = facepoints.load(args.model, detector=args.detector, threads=2, flip=flip, refine=refine)
        cells, seconds, images = [], 0.0, 0
        for title, samples in subsets.items():
            t = time.perf_counter()
            ev = evaluate(Dataset(title, IBUG68, samples), p, use_detector=True)
            seconds += time.perf_counter() - t
            images += len(samples)
            e = nme(ev.predictions, np.stack([s.landmarks for s in samples]), IBUG68, "io")
            found = np.isfinite(e)
            missed = f" ({(~found).sum()} missed)" if not found.all() else ""
            cells.append(f"{e[found].mean() * 100:.2f}{missed}" if found.any() else "-")
        lines.append(f"| {'on' if flip else 'off'} | {refine} | " + " | ".join(cells) + f" | {seconds * 1000 / images:.1f} |")
        print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
