"""Do the PIP score maps know more about a face's error than its error radii?

The bundled default's score map (one per landmark, over the grid) is read with the PyTorch
model on AFLW2000-3D's dev half (ground-truth boxes): per face the mean and median of each
landmark's peak score, the least peak, the mean softmax peak and the mean margin between the
best and second-best cell; each alone and added (standardised) to the bundled quality at
weights 0.25, 0.5 and 1. Weights are read on the dev half itself, so the best of them is an
upper bound of what this information adds, not a choice.

    python lab/quality/score_peaks.py --out lab/quality/score_peaks.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import facepoints  # noqa: E402
from facepoints.data.formats import read_dataset  # noqa: E402
from facepoints.data.images import read_image  # noqa: E402
from facepoints.data.samples import landmark_box  # noqa: E402
from facepoints.deploy.export import load_model  # noqa: E402
from facepoints.evaluation.machine import command_line, report_header  # noqa: E402
from facepoints.evaluation.metrics import nme  # noqa: E402
from facepoints.models.info import BUNDLED_MODELS  # noqa: E402
from quality import TABLE, finish, scores  # noqa: E402

SUMMARIES = ("mean peak score", "median peak score", "least peak score", "mean softmax peak", "mean best-second margin")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pose-set", default="300w:../shared/data/aflw2000-dev")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    model, info = load_model(BUNDLED_MODELS["default"])
    model.eval()
    predictor = facepoints.load("default", detector=None)  # the bundled quality, through Face
    ds = read_dataset(a.pose_set)
    feats, faces = [], []
    with torch.no_grad():
        for s in ds.samples:
            img, box = read_image(s.image), landmark_box(s.landmarks)[None]
            faces.append(predictor.predict(img, landmark_boxes=box)[0])
            x, _ = predictor.network_input(img, box)
            score = model.raw(torch.from_numpy(x))[0].reshape(1, info.landmark_scheme.num_points, -1)[0]
            peak = score.max(-1).values.numpy()
            top2 = score.topk(2, -1).values.numpy()
            feats.append([peak.mean(), np.median(peak), peak.min(),
                          torch.softmax(score * 10, -1).max(-1).values.mean().item(), (top2[:, 0] - top2[:, 1]).mean()])
    f = np.array(feats)
    dev = {"nme": nme(np.stack([c.landmarks for c in faces]), np.stack([s.landmarks for s in ds.samples]),
                      info.landmark_scheme, "box")}
    abs_yaw = np.abs([s.attributes["yaw"] for s in ds.samples])
    quality = np.log([c.quality for c in faces])
    zq = (quality - quality.mean()) / quality.std()
    lines = report_header("Per-face quality: what the PIP score maps add (default)", command_line(__file__),
                          "GT boxes; score maps from the PyTorch model, quality through Face")
    lines += [f"Faces: {len(ds.samples)} of {a.pose_set}. Columns as in quality-default.md.", "",
              *TABLE, f"| the bundled quality (mean radius) | {scores(zq, dev, abs_yaw)} |"]
    for j, name in enumerate(SUMMARIES):
        z = (f[:, j] - f[:, j].mean()) / f[:, j].std()
        lines.append(f"| {name} | {scores(z, dev, abs_yaw)} |")
        for w in (0.25, 0.5, 1.0):
            lines.append(f"| bundled quality + {w} x {name} | {scores(zq + w * z, dev, abs_yaw)} |")
    finish(lines, a.out)


if __name__ == "__main__":
    main()
