"""Can a per-face quality do better than the mean error radius at keeping the best faces?

Issue 29's selective-NME bar: keeping the 90 % most trusted faces should lower their NME
by at least 15 %. The bundled quality is ``2 ** -(mean radius / scale)``. This script
scores other qualities made from what ``Face`` gives (error radii, visibility, head pose):
each single summary, and linear combinations fitted on the validation split (ridge
regression of log face NME; the validation faces are the calibration's own), then read on
AFLW2000-3D's dev half (never trained or fitted on). The ceiling is a perfect ranking
(keeping the faces of lowest true error): no quality can beat it.

    python lab/quality/quality.py --config configs/default-pose.yaml --model default --out lab/quality/quality-default.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import facepoints  # noqa: E402
from facepoints.data.formats import read_dataset  # noqa: E402
from facepoints.evaluation.machine import command_line, report_header  # noqa: E402
from facepoints.evaluation.metrics import nme  # noqa: E402
from facepoints.training.config import load_config  # noqa: E402
from facepoints.training.loop import make_splits  # noqa: E402
from facepoints.training.trust import _auroc  # noqa: E402
from trust import balanced, faces_through  # noqa: E402

# (name, function of the faces' outputs, higher = more trusted)
SUMMARIES = {
    "mean radius (bundled)": lambda f: -np.log(f["r"].mean(1)),
    "median radius": lambda f: -np.median(np.log(f["r"]), 1),
    "90th percentile radius": lambda f: -np.percentile(np.log(f["r"]), 90, 1),
    "largest radius": lambda f: -np.log(f["r"]).max(1),
    "spread of log radii": lambda f: -np.log(f["r"]).std(1),
    "mean radius, jaw (0-16)": lambda f: -np.log(f["r"][:, :17].mean(1)),
    "mean radius, inner 51": lambda f: -np.log(f["r"][:, 17:].mean(1)),
    "mean visibility": lambda f: f["visible"].mean(1),
    "least visibility": lambda f: f["visible"].min(1),
    "share of points under 0.5 visibility": lambda f: -(f["visible"] < 0.5).mean(1),
    "\\|yaw\\| (predicted)": lambda f: -np.abs(np.nan_to_num(f["yaw"])),
}
COMBINATIONS = [
    ["mean radius (bundled)", "\\|yaw\\| (predicted)"],
    ["mean radius (bundled)", "mean visibility"],
    ["mean radius (bundled)", "mean visibility", "\\|yaw\\| (predicted)"],
    ["mean radius, jaw (0-16)", "mean radius, inner 51"],
    ["mean radius, jaw (0-16)", "mean radius, inner 51", "\\|yaw\\| (predicted)"],
    list(SUMMARIES),
]


def outputs(predictor, samples, scheme) -> dict:
    f = faces_through(predictor, samples)
    f["nme"] = nme(f["pred"], np.stack([s.landmarks for s in samples]), scheme, "box")
    f["r"] = f["radius"] / np.ptp(f["pred"], axis=1).max(1)[:, None]  # radii in face sizes
    return f


def ridge(x: np.ndarray, y: np.ndarray, alpha: float = 1.0):
    """A ridge regression of ``y`` on the standardised columns of ``x``: its predictor."""
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = (x - mu) / sd
    coef = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return lambda a: ((a - mu) / sd) @ coef + y.mean()


def scores(quality, f, abs_yaw, keep: float = 0.9) -> str:
    kept = np.zeros(len(quality), bool)
    kept[np.argsort(-quality)[:int(round(keep * len(quality)))]] = True
    gain = 1 - f["nme"][kept].mean() / f["nme"].mean()
    gain_p = 1 - balanced(f["nme"], abs_yaw, kept) / balanced(f["nme"], abs_yaw)
    big = abs_yaw >= 30
    auc = _auroc(-quality[big], f["nme"][big] > 0.08)
    return f"{100 * gain:.1f} | {100 * gain_p:.1f} | {auc:.3f}"


TABLE = ["| quality | selective gain, mean NME % | selective gain, protocol % | failure AUROC, \\|yaw\\| >= 30 |",
         "|---|---:|---:|---:|"]


def finish(lines: list[str], out: str | None) -> None:
    """Print the report and write it to ``out`` (if given)."""
    text = "\n".join(lines) + "\n"
    if out:
        Path(out).write_text(text)
    print(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--pose-set", default="300w:../shared/data/aflw2000-dev")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    predictor = facepoints.load(a.model, detector=None)
    splits = make_splits(load_config(a.config))
    scheme = splits.val.scheme
    val = outputs(predictor, splits.val.samples, scheme)
    ds = read_dataset(a.pose_set)
    dev = outputs(predictor, ds.samples, scheme)
    abs_yaw = np.abs([s.attributes["yaw"] for s in ds.samples])

    lines = report_header(f"Per-face quality: which summary keeps the best faces ({a.model})", command_line(__file__),
                          "GT boxes, through Face (ONNX Runtime)")
    lines += [f"Faces: {len(splits.val.samples)} of the validation split (fits) and {len(ds.samples)} of "
              f"{a.pose_set} (read). Selective gain: how much lower the NME of the 90 % most trusted faces is "
              "than all faces' (mean NME; and by the AFLW2000-3D protocol, the balanced mean of the \\|yaw\\| "
              "buckets); AUROC: low quality flags faces over 8 % NME at \\|yaw\\| >= 30.", "",
              *TABLE, f"| a perfect ranking (the true error; the ceiling) | {scores(-dev['nme'], dev, abs_yaw)} |"]
    for name, fn in SUMMARIES.items():
        lines.append(f"| {name} | {scores(fn(dev), dev, abs_yaw)} |")
    target = np.log(val["nme"])
    for names in COMBINATIONS:
        fit = ridge(np.column_stack([SUMMARIES[n](val) for n in names]), target)
        q = -fit(np.column_stack([SUMMARIES[n](dev) for n in names]))
        label = "all of the above" if len(names) == len(SUMMARIES) else " + ".join(names)
        lines.append(f"| ridge fit on validation: {label} | {scores(q, dev, abs_yaw)} |")
    finish(lines, a.out)


if __name__ == "__main__":
    main()
