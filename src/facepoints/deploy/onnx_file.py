"""Writing ONNX files: the export itself, the metadata it carries, and the photos
exports are checked on. Used by the exporter, the ONNX cache and quantisation alike."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from facepoints.inference.runtime import TRUST_GATE
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
    proto = onnx.load_from_string(buf.getvalue())
    if len(outputs) > 1 and not dense:  # int8 exports (dense) are quantised whole, without the gate
        gate_trust(proto, info.landmark_scheme.num_points)
    return save_onnx(proto, info, out)


def gate_trust(proto, num_points: int) -> None:
    """Move the nodes that only the ``trust`` output needs under an ``If`` on the boolean
    input :data:`TRUST_GATE` (true by default: an initializer of the same name, so callers
    that do not know it get both outputs). ONNX Runtime runs every node of a graph whatever
    outputs are asked for; a caller that wants the landmarks alone (a refinement pass,
    ``landmarks_in_boxes``) passes false and the trust modules do not run (their ``trust``
    output is then empty, 0 x P x 2)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = proto.graph
    nodes = list(g.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}

    def needed_for(name: str) -> set[int]:
        seen, stack = set(), [name]
        while stack:
            i = producer.get(stack.pop())
            if i is not None and i not in seen:
                seen.add(i)
                stack.extend(v for v in nodes[i].input if v)
        return seen

    only_trust = needed_for("trust") - needed_for("landmarks")
    if not only_trust:  # nothing to skip
        return
    moved = [onnx.NodeProto.FromString(nodes[i].SerializeToString()) for i in sorted(only_trust)]
    for n in moved:  # the branch's result, renamed: the If gives the graph's "trust"
        n.output[:] = ["trust_computed" if o == "trust" else o for o in n.output]
        # the landmarks through an Identity: OpenVINO cannot read a graph output inside a branch
        n.input[:] = ["/trust_gate/landmarks" if v == "landmarks" else v for v in n.input]
    then_branch = helper.make_graph(moved, "trust_modules", [],
                                    [helper.make_tensor_value_info("trust_computed", TensorProto.FLOAT, None)])
    empty = numpy_helper.from_array(np.zeros((0, num_points, 2), np.float32), "trust_skipped")
    else_branch = helper.make_graph([helper.make_node("Constant", [], ["trust_skipped"], value=empty)], "no_trust", [],
                                    [helper.make_tensor_value_info("trust_skipped", TensorProto.FLOAT, None)])
    gate = helper.make_node("If", [TRUST_GATE], ["trust"], name="/trust_gate/If",
                            then_branch=then_branch, else_branch=else_branch)
    del g.node[:]
    g.node.extend([n for i, n in enumerate(nodes) if i not in only_trust]
                  + [helper.make_node("Identity", ["landmarks"], ["/trust_gate/landmarks"], name="/trust_gate/Identity"), gate])
    g.input.append(helper.make_tensor_value_info(TRUST_GATE, TensorProto.BOOL, []))
    g.initializer.append(numpy_helper.from_array(np.array(True), TRUST_GATE))
    for o in g.output:  # its batch is 0 when skipped
        if o.name == "trust":
            o.type.tensor_type.shape.dim[0].dim_param = "trust_batch"


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
    if any(i.name == TRUST_GATE for i in proto.graph.input):
        trust += f" (optional input {TRUST_GATE}, bool, true by default: false skips the trust modules)"
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
