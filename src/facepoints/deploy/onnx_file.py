"""Writing ONNX files: the export itself, the metadata it carries, and the photos
exports are checked on. Used by the exporter, the ONNX cache and quantisation alike."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import torch

from facepoints.models.info import ModelInfo

DEFAULT_OPSET = 17
# examples/ next to src/ in a source checkout
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@contextlib.contextmanager
def quiet_exporter_warnings():
    """Hide the exporters' deprecation notices (the legacy ONNX exporter is the one that
    needs no extra packages); tracer warnings still show."""
    with warnings.catch_warnings():
        for msg in (".*legacy TorchScript-based ONNX export.*", ".*The feature will be removed.*",
                    ".*torch.jit.*deprecated.*", ".*TorchScript.*deprecated.*"):
            warnings.filterwarnings("ignore", message=msg)
        # the PIP head reads its grid size as plain ints on purpose (constants in the graph)
        warnings.filterwarnings("ignore", message=".*Converting a tensor to a Python integer.*",
                                module="facepoints.models.network")
        yield


def tmp_for(out: Path) -> Path:
    return out.with_name(f".{out.name}.tmp{os.getpid()}")


def write_onnx(model: torch.nn.Module, info: ModelInfo, out: str | Path, opset: int = DEFAULT_OPSET,
               trust: bool = True, dense: bool = False) -> Path:
    """Write ``model`` as ONNX to ``out`` (no checks; see :func:`export_model`); a model
    with trust outputs gets its second output unless ``trust`` is False. ``dense``: the
    graph decodes the head's dense maps (``LandmarkNet.sparse_decoding`` False), what an
    int8 export quantises."""
    import onnx

    out = Path(out)
    s = info.input_size
    example = torch.rand(2, 3, s, s)
    buf = io.BytesIO()
    outputs = ["landmarks"]
    net, sparse = model, getattr(model, "sparse_decoding", None)
    if trust and getattr(model, "has_trust", False):  # a second output: per landmark (error scale, visibility)
        from facepoints.models.network import TrustOutputs

        model, outputs = TrustOutputs(model), ["landmarks", "trust"]
    try:
        if sparse is not None:
            net.sparse_decoding = not dense
        with quiet_exporter_warnings():
            torch.onnx.export(model.eval(), (example,), buf, opset_version=opset, input_names=["image"],
                              output_names=outputs, dynamic_axes={"image": {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
                              do_constant_folding=True, dynamo=False)
    finally:
        if sparse is not None:
            net.sparse_decoding = sparse
    return save_onnx(onnx.load_from_string(buf.getvalue()), info, out)


def save_onnx(proto, info: ModelInfo, out: Path, kind: str = "") -> Path:
    """Check ``proto`` and write it to ``out`` with ``info`` as its only metadata
    (key ``facepoints``) and a doc string saying what goes in and comes out."""
    import onnx

    del proto.metadata_props[:]
    meta = proto.metadata_props.add()
    meta.key, meta.value = "facepoints", info.to_json()
    s = info.input_size
    p = info.landmark_scheme.num_points
    trust = (f", trust (B, {p}, 2): per landmark the error scale in crop units and the visibility probability"
             if len(proto.graph.output) > 1 else "")
    proto.doc_string = (f"facepoints landmark model{kind}: image (B, 3, {s}, {s}) float32 RGB in [0, 1] -> "
                        f"landmarks (B, {p}, 2) in crop units{trust}; metadata under 'facepoints'")
    onnx.checker.check_model(proto)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    return out


def image_files(images) -> list[Path]:
    from facepoints.data.images import IMAGE_SUFFIXES

    if images is None:
        images = [EXAMPLES]
    out: list[Path] = []
    for p in map(Path, images):
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            out.append(p)
    return out
