"""The bundled models' ONNX files: what inference runs, built from the ``.safetensors``
files beside them (the training output) and checked against them.

    python -m facepoints.deploy.bundle            # rebuild weights/default.onnx and fast.onnx
    python -m facepoints.deploy.bundle --check    # exit 1 if one is missing or out of date

Each export goes through :func:`facepoints.deploy.export.export_model` (parity with the
PyTorch model on the example photos, 0.1 px) and records the SHA-256 of the file it was
made from (``exported_from`` in its metadata), which is how ``--check`` (and the test
suite) know it is current.
"""

from __future__ import annotations

import argparse
import sys

from facepoints.deploy.export import export_model
from facepoints.deploy.runners import file_sha256
from facepoints.inference.runtime import OnnxRunner
from facepoints.models.info import BUNDLED_MODELS, BUNDLED_ONNX, read_info


def staleness(name: str) -> str | None:
    """Why the bundled model ``name``'s ONNX file is not current, or None if it is."""
    src, onnx = BUNDLED_MODELS[name], BUNDLED_ONNX[name]
    if not onnx.is_file():
        return f"{onnx}: missing"
    info = OnnxRunner(onnx).info()
    want = file_sha256(src)
    if info.exported_from.get("sha256") != want:
        return f"{onnx}: made from {info.exported_from or 'an unknown file'}, but {src.name} is now sha256 {want[:12]}..."
    info.exported_from = {}
    if info.to_json() != read_info(src).to_json():
        return f"{onnx}: its metadata differs from {src.name}'s"
    return None


def build(names=None) -> list[str]:
    """Export each bundled model (all by default) over its packaged ONNX file; the
    parity reports' summaries."""
    out = []
    for name in names or BUNDLED_MODELS:
        report = export_model(BUNDLED_MODELS[name], "onnx", BUNDLED_ONNX[name])
        out.append(f"{name}: {BUNDLED_ONNX[name]}: {report.summary()}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only report missing or out-of-date files (exit 1)")
    ap.add_argument("names", nargs="*", choices=[[], *BUNDLED_MODELS], help="bundled models (default: all)")
    args = ap.parse_args(argv)
    if args.check:
        stale = [s for s in map(staleness, args.names or BUNDLED_MODELS) if s]
        for line in stale:
            print(line, file=sys.stderr)
        return 1 if stale else 0
    for line in build(args.names):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
