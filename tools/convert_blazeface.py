#!/usr/bin/env python
"""Convert MediaPipe's short-range BlazeFace face detector to the ONNX file that
``facepoints.inference.detectors.BlazeFaceDetector`` runs.

The source is ``face_detection_short_range.tflite`` from the ``mediapipe`` 0.10.21 wheel
(Apache License 2.0, (c) Google LLC; the model card: "BlazeFace (short range)",
https://arxiv.org/abs/1907.05047). The conversion is ``tflite2onnx`` 0.4.1 (pure Python,
no TensorFlow); its float16 weights are stored as float32 in the ONNX file. Run once, in
a throwaway venv, and commit the result together with the licence text:

    python3 -m venv /tmp/conv && /tmp/conv/bin/pip install tflite2onnx==0.4.1 mediapipe==0.10.21
    /tmp/conv/bin/python tools/convert_blazeface.py

(``--tflite`` and ``--licence`` take the files from another mediapipe install, e.g. the
``.venv-mediapipe`` of ``benchmarks/compare.py``.) The output's agreement with MediaPipe's own detector is
measured by ``benchmarks/detectors.py``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "facepoints" / "weights" / "blazeface_short_range.onnx"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tflite", type=Path, help="face_detection_short_range.tflite (default: from the mediapipe package)")
    ap.add_argument("--licence", type=Path, help="mediapipe's LICENSE file (default: from the mediapipe package)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    src, licence = args.tflite, args.licence
    if src is None or licence is None:
        from importlib.metadata import distribution

        dist = distribution("mediapipe")
        src = src or Path(dist.locate_file("mediapipe/modules/face_detection/face_detection_short_range.tflite"))
        licence = licence or Path(dist.locate_file(next(f for f in dist.files if f.name == "LICENSE")))
    for f in (src, licence):
        if not Path(f).is_file():
            raise SystemExit(f"{f}: no such file")
    import onnx
    import tflite2onnx

    tflite2onnx.convert(str(src), str(args.out))
    model = onnx.load(str(args.out))
    inputs = [(i.name, [d.dim_value for d in i.type.tensor_type.shape.dim]) for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != [("input", [1, 3, 128, 128])] or outputs != ["regressors", "classificators"]:
        raise SystemExit(f"{args.out}: unexpected signature {inputs} -> {outputs}")
    shutil.copyfile(licence, args.out.with_name("blazeface_short_range.LICENSE.txt"))
    print(f"{src} -> {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
