"""Static int8 quantisation of an ONNX export (ONNX Runtime), calibrated on real faces.

    crops, note = calibration_crops(model, info)                          # examples/ photos
    crops, note = calibration_crops(model, info, dataset="300w:../shared/data/300w/afw")
    quantize_onnx("m.onnx", "m-int8.onnx", crops, int8_info(info, note, len(crops)))

``facepoints export --format onnx --int8`` does all of this and checks the result
(:func:`facepoints.deploy.export.export_model`).

The scheme: ONNX Runtime ``quantize_static`` in QOperator format (QLinearConv and
friends), weights int8 per output channel, activations uint8 per tensor (U8S8), ranges
from MinMax calibration. Chosen side by side (benchmarks/precision.md, both bundled
models): U8S8 ran 1.5-1.7x faster than fp32 on this CPU (AVX-512 VNNI), where S8S8 QDQ,
ONNX Runtime's default, ran no faster than fp32; QOperator and QDQ U8S8 give identical
landmarks, QOperator slightly faster. (On x86 CPUs without VNNI, U8S8 can saturate; QDQ
S8S8 stays available through ``quantize_onnx(fmt="qdq", activations="int8")``.) The model is first put through ONNX Runtime's
``quant_pre_process`` (shape inference and graph optimisation, e.g. BatchNorm folded
into convolutions, so each fused convolution gets one weight scale per channel).

Calibration crops are made by the :class:`~facepoints.inference.predictor.Predictor`
itself: the fp32 model runs behind a recorder, so the calibration set is exactly the
batches inference feeds the network (detector crops, the refinement crops around the
predicted landmarks, and the mirrored copies when the model uses flip averaging).
From photos the face detector finds the faces; from an annotated dataset the crops
come from the ground-truth landmark boxes (the evaluation protocol).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from facepoints.errors import FacepointsError
from facepoints.models.package import ModelInfo

DEFAULT_CALIBRATION_FACES = 200
# An int8 export is kept if the mean point distance between its landmarks and the fp32
# PyTorch model's, in percent of the inter-ocular distance, stays at or below this
# (it bounds how much the NME against any ground truth can move). 1 point is loose on
# purpose: the bundled model is at about 5.5 % NME, and int8 usually costs a fraction
# of a point; what it catches is a broken quantisation (tens of points).
INT8_MAX_NME_CHANGE = 1.0


class CalibrationError(FacepointsError, ValueError):
    """No usable calibration faces."""


class _Recorder:
    """Wraps a backend ``run(batch)`` and keeps a copy of every batch it is given."""

    def __init__(self, run):
        self.run, self.batches = run, []

    def __call__(self, batch):
        self.batches.append(np.array(batch, dtype=np.float32, copy=True))
        return self.run(batch)


def _recording_predictor(model, info: ModelInfo, detector, refine: int):
    from facepoints.deploy.runners import TorchRunner
    from facepoints.inference.predictor import Predictor

    run = model if not hasattr(model, "state_dict") else TorchRunner(model)
    pred = Predictor(run, info, detector=detector, refine=refine)
    rec = _Recorder(pred.run)
    pred.run = rec
    return pred, rec


def crops_from_photos(model, info: ModelInfo, photos, faces: int = DEFAULT_CALIBRATION_FACES,
                      detector="yunet", refine: int = 1) -> tuple[np.ndarray, int]:
    """Network inputs for the faces the detector finds in ``photos`` (paths), as
    ``Predictor.predict`` makes them (``refine`` refinement passes); stops after
    ``faces`` faces. Returns ``(crops (N, 3, S, S) float32, faces used)``."""
    from facepoints.data.images import read_image

    pred, rec = _recording_predictor(model, info, detector, refine)
    used = 0
    for photo in photos:
        if used >= faces:
            break
        used += len(pred.predict(read_image(photo)))
    if not rec.batches:
        raise CalibrationError(f"the face detector found no face in {len(list(photos))} calibration photo(s)")
    return np.concatenate(rec.batches), used


def crops_from_samples(model, info: ModelInfo, samples, faces: int = DEFAULT_CALIBRATION_FACES,
                       seed: int = 0) -> tuple[np.ndarray, int]:
    """Network inputs for annotated ``samples`` (``.image``, ``.landmarks``), cropped
    from their ground-truth landmark boxes as ``Predictor.predict(image, landmark_boxes=...)``
    does; at most ``faces`` of them, drawn at random (``seed``) when there are more."""
    from facepoints.data.images import read_image
    from facepoints.data.samples import landmark_box

    samples = list(samples)
    if not samples:
        raise CalibrationError("no calibration faces: the dataset is empty")
    if len(samples) > faces:
        keep = np.sort(np.random.default_rng(seed).choice(len(samples), faces, replace=False))
        samples = [samples[i] for i in keep]
    pred, rec = _recording_predictor(model, info, None, 0)
    for s in samples:
        pred.predict(read_image(s.image), landmark_boxes=landmark_box(s.landmarks)[None])
    return np.concatenate(rec.batches), len(samples)


def calibration_crops(model, info: ModelInfo, dataset: str | None = None, photos=None,
                      faces: int = DEFAULT_CALIBRATION_FACES, detector="yunet", seed: int = 0) -> tuple[np.ndarray, str]:
    """Calibration crops and a one-line description of where they came from.

    ``dataset``: a ``FORMAT:PATH`` spec (ground-truth boxes); otherwise ``photos``
    (files or folders; the example photos by default) through the face detector.
    ``model``: the fp32 PyTorch module (or any backend) that makes the refinement crops.
    """
    if faces < 1:
        raise CalibrationError(f"calibration needs at least one face, not {faces}")
    if dataset is not None:
        from facepoints.data.formats import read_dataset

        ds = read_dataset(dataset, info.landmark_scheme)
        crops, used = crops_from_samples(model, info, ds.samples, faces, seed)
        return crops, f"{used} faces of {dataset} (ground-truth landmark boxes), {len(crops)} crops"
    from facepoints.deploy.onnx_file import image_files

    files = image_files(photos)
    if not files:
        raise CalibrationError("no calibration photos (give a dataset with --calibration FORMAT:PATH)")
    crops, used = crops_from_photos(model, info, files, faces, detector)
    where = "the example photos" if photos is None else f"{len(files)} photo(s)"
    name = detector if isinstance(detector, str) else "detector"
    return crops, f"{used} faces in {where} ({name} boxes + refinement), {len(crops)} crops"


class CropReader:
    """An ONNX Runtime ``CalibrationDataReader`` over an array of crops."""

    def __init__(self, crops: np.ndarray, input_name: str, batch: int = 16):
        self.crops, self.input_name, self.batch, self.pos = crops, input_name, batch, 0

    def get_next(self):
        if self.pos >= len(self.crops):
            return None
        x = np.ascontiguousarray(self.crops[self.pos:self.pos + self.batch], dtype=np.float32)
        self.pos += self.batch
        return {self.input_name: x}

    def rewind(self):
        self.pos = 0


def _reader(crops, input_name, batch=16):
    # subclass at call time: onnxruntime.quantization is imported only when quantising
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CropReader, CalibrationDataReader):
        pass

    return Reader(crops, input_name, batch)


def int8_scheme(fmt: str, activations: str) -> tuple[str, str]:
    """How a format and activation type are written in reports and metadata:
    ("QDQ" or "QOperator", "S8S8" or "U8S8")."""
    return ("QDQ" if fmt == "qdq" else "QOperator"), ("S8S8" if activations == "int8" else "U8S8")


def int8_info(info: ModelInfo, calibration: str, crops: int, method: str = "MinMax", fmt: str = "qoperator",
              activations: str = "uint8") -> ModelInfo:
    """``info`` marked as an int8 export, with how it was quantised."""
    import onnxruntime

    return dataclasses.replace(info, precision="int8", quantization={
        "tool": f"onnxruntime {onnxruntime.__version__} quantize_static",
        "format": int8_scheme(fmt, activations)[0],
        "weights": "int8, per output channel",
        "activations": f"{activations}, per tensor; the decoding of the head's output stays fp32",
        "calibration_method": method,
        "calibration": calibration,
        "calibration_crops": int(crops),
    })


def decoding_nodes(graph) -> list[str]:
    """The nodes of an exported network that int8 exports leave in fp32: all but the
    trunk (``/trunk/...``, or ``/trunk.K/...`` when its blocks are called one by one for
    the trust taps) and the head's convolutions. int8 exports quantise the graph that
    decodes the dense maps (``write_onnx(dense=True)``), so that is the decoding of the
    head's output into landmarks (for PIP: argmax, one-hot reads, neighbour averaging) and
    the point-feature visibility. Quantised, their
    8-bit offsets and sums cost 2-4x the landmark error (1.1 vs 0.3-0.5 % NME change on the
    bundled models) for little size. Empty for a graph without trunk names (a foreign
    layout): then everything is quantised."""
    names = [n.name for n in graph.node]
    trunk = ("/trunk/", "/trunk.")
    if not any(n.startswith(trunk) for n in names):
        return []
    return [n.name for n in graph.node
            if not n.name.startswith(trunk) and (n.op_type not in HEAD_QUANTISED or "trust_points" in n.name)]


# the head's layers that int8 exports quantise (its weights), found by kind: the head's
# reshapes and activations stay fp32 with the decoding, and so does the point-feature
# visibility's convolution (named /trust_points/..., outside /head/: decoding_nodes)
HEAD_QUANTISED = ("Conv", "ConvTranspose", "Gemm")


QUANT_FORMATS = ("qdq", "qoperator")
ACTIVATION_TYPES = ("int8", "uint8")


def quantize_onnx(fp32_path: str | Path, out: str | Path, crops: np.ndarray, info: ModelInfo,
                  method: str = "MinMax", per_channel: bool = True, nodes_to_exclude=None,
                  fmt: str = "qoperator", activations: str = "uint8") -> Path:
    """Quantise the fp32 ONNX file ``fp32_path`` to ``out`` (static) with ranges from
    ``crops``; ``info`` (see :func:`int8_info`) goes into the file's metadata. ``fmt``:
    ``qdq`` (Quantize/DequantizeLinear pairs around fp32 operators, fused by ONNX
    Runtime) or ``qoperator`` (QLinearConv and friends); ``activations``: ``int8`` or
    ``uint8`` (weights are int8 either way: S8S8 or U8S8)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method.lower() not in methods:
        raise ValueError(f"unknown calibration method {method!r}; choose from MinMax, Entropy, Percentile")
    if len(crops) == 0:
        raise CalibrationError("no calibration crops")
    if fmt not in QUANT_FORMATS or activations not in ACTIVATION_TYPES:
        raise ValueError(f"int8 format {fmt!r} / activations {activations!r}: choose from {QUANT_FORMATS} / "
                         f"{ACTIVATION_TYPES}")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="facepoints-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre))
        graph = onnx.load(str(pre), load_external_data=False).graph
        input_name = graph.input[0].name
        if nodes_to_exclude is None:  # the decoding stays fp32 (see int8_info)
            nodes_to_exclude = decoding_nodes(graph)
        q = Path(tmp) / "int8.onnx"
        # the histogram calibrators need batches of one shape: feed them one crop at a time
        batch = 16 if method.lower() == "minmax" else 1
        quantize_static(str(pre), str(q), _reader(crops, input_name, batch),
                        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                        per_channel=per_channel, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
                        calibrate_method=methods[method.lower()], nodes_to_exclude=nodes_to_exclude)
        proto = onnx.load(str(q))
    from facepoints.deploy.onnx_file import save_onnx

    return save_onnx(proto, info, out, kind=", int8 (static {}, {})".format(*int8_scheme(fmt, activations)))
