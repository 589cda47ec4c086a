"""Export a facepoints model to ONNX or TorchScript, and prove the export is faithful.

    report = export_model("model.safetensors", "onnx", "model.onnx")
    print(report.summary())

The exported file carries the model's metadata (:class:`~facepoints.models.package.ModelInfo`
as JSON): ONNX in ``metadata_props`` under the key ``facepoints``, TorchScript as the
extra file ``facepoints.json``. Input: float32 ``(B, 3, S, S)`` RGB in [0, 1] (the network
normalises itself; the batch axis is dynamic); output ``(B, P, 2)`` in crop units.

Every export is checked before it is kept: the example photos go through the face
detector, the crops go through both the PyTorch model and the export, and the
landmarks are compared in pixels of the original image. An export that differs by
more than ``tolerance`` pixels (0.1 for fp32) is deleted and an error raised.

``int8=True`` (ONNX only) quantises the export statically with ONNX Runtime,
calibrated on real face crops (:mod:`facepoints.optimize.quantize`); its metadata
says ``"precision": "int8"``. An int8 model cannot meet the 0.1 px bar, so it is
judged by the NME change instead: the mean landmark distance to the fp32 PyTorch
model in percent of the inter-ocular distance, refused above ``max_nme_change``
(1 point by default; the largest coordinate difference is reported too).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from facepoints.deploy.onnx_file import (  # noqa: F401 (EXAMPLES re-exported)
    DEFAULT_OPSET,
    EXAMPLES,
    image_files,
    quiet_exporter_warnings,
    tmp_for,
    write_onnx,
)
from facepoints.deploy.runners import TorchRunner, file_sha256
from facepoints.errors import FacepointsError
from facepoints.inference.runtime import OnnxRunner
from facepoints.models.info import parse_info
from facepoints.models.package import ModelInfo, load_model, model_file

FORMATS = ("onnx", "torchscript")
TORCHSCRIPT_META = "facepoints.json"
DEFAULT_TOLERANCE_PX = 0.1


class ExportError(FacepointsError, RuntimeError):
    """An export that failed or does not reproduce the PyTorch model."""


@dataclass
class ParityReport:
    """How closely an export reproduces the PyTorch model, on detector crops of real photos.

    ``max_diff_px``: the largest difference of one landmark coordinate (x or y), in
    pixels of the original image. ``nme_change``: the mean point distance between the
    two, in percent of the normaliser (``normaliser``: ``"io"`` inter-ocular distance of
    the PyTorch landmarks, or ``"box"`` the face box size); by the triangle
    inequality it bounds how much the NME against any ground truth can change.
    """

    format: str
    path: str
    images: int
    faces: int
    max_diff_px: float
    mean_diff_px: float
    nme_change: float
    normaliser: str
    tolerance_px: float
    metadata_ok: bool
    per_image: list = field(default_factory=list)
    precision: str = "fp32"
    # int8: judged by nme_change <= max_nme_change instead of the pixel tolerance
    max_nme_change: float | None = None
    calibration: str = ""
    # a model with trust outputs: the largest difference of a visibility probability and
    # the largest relative difference of an error radius (None without them; trust_lost:
    # the export has none where the model has them)
    visible_diff: float | None = None
    radius_diff: float | None = None
    trust_lost: bool = False

    @property
    def ok(self) -> bool:
        if self.faces == 0 or not self.metadata_ok or self.trust_lost:
            return False
        if self.max_nme_change is not None:
            return self.nme_change <= self.max_nme_change
        trust_ok = all(d is None or d <= TRUST_TOLERANCE for d in (self.visible_diff, self.radius_diff))
        return self.max_diff_px <= self.tolerance_px and trust_ok

    def trust_summary(self) -> str:
        if self.trust_lost:
            return "; trust outputs LOST"
        if self.visible_diff is None:
            return ""
        radius = "" if self.radius_diff is None else f", error radius within {100 * self.radius_diff:.3f} %"
        return f"; trust outputs: visibility within {self.visible_diff:.5f}{radius}"

    def summary(self) -> str:
        norm = "inter-ocular" if self.normaliser == "io" else "face box"
        meta = f"metadata {'intact' if self.metadata_ok else 'LOST'}"
        if self.max_nme_change is not None:
            return (f"{self.format} {self.precision} vs the fp32 PyTorch model on {self.faces} face(s) in "
                    f"{self.images} photo(s): NME change {self.nme_change:.3f} % ({norm}; limit {self.max_nme_change} %), "
                    f"max landmark difference {self.max_diff_px:.3f} px, mean {self.mean_diff_px:.3f} px; {meta}; "
                    f"calibrated on {self.calibration}{self.trust_summary()}")
        return (f"{self.format} parity on {self.faces} face(s) in {self.images} photo(s): "
                f"max landmark difference {self.max_diff_px:.5f} px (limit {self.tolerance_px} px), "
                f"mean {self.mean_diff_px:.5f} px; NME change {self.nme_change:.5f} % ({norm}); {meta}"
                f"{self.trust_summary()}")

    def to_dict(self) -> dict:
        return asdict(self)


# the most a visibility probability, or an error radius relative to itself, may move in an
# fp32 export (both are smooth functions of the same numbers as the landmarks)
TRUST_TOLERANCE = 0.01


def write_torchscript(model: torch.nn.Module, info: ModelInfo, out: str | Path) -> Path:
    """Trace ``model`` and save it as TorchScript with the metadata as an extra file."""
    out = Path(out)
    s = info.input_size
    with quiet_exporter_warnings():
        with torch.no_grad():
            # check_trace would trace twice more; export_model's parity check on real
            # faces (other batch sizes included) is the stronger test
            traced = torch.jit.trace(model.eval(), torch.rand(2, 3, s, s), check_trace=False)
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(traced, str(out), _extra_files={TORCHSCRIPT_META: info.to_json()})
    return out


def read_onnx_info(path: str | Path) -> ModelInfo:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if "facepoints" not in meta:
        raise ExportError(f"{path}: no facepoints metadata")
    return parse_info(meta["facepoints"], path)


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, ModelInfo]:
    """A TorchScript export and its metadata. Only for files you made: TorchScript is code."""
    extra = {TORCHSCRIPT_META: ""}
    with quiet_exporter_warnings():
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra[TORCHSCRIPT_META]:
        raise ExportError(f"{path}: no {TORCHSCRIPT_META} metadata")
    text = extra[TORCHSCRIPT_META]
    return module.eval(), ModelInfo.from_json(text.decode() if isinstance(text, bytes) else text)


def _normalisers(ref: np.ndarray, boxes: np.ndarray, scheme) -> tuple[np.ndarray, str]:
    """Inter-ocular distance of the reference landmarks where the scheme has eye
    corners and the landmarks look like a face (an untrained model's do not); the
    face box size otherwise."""
    from facepoints.evaluation.metrics import has_normaliser

    box = np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 1e-6) * np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6))
    if has_normaliser(scheme, "io"):
        a, b = scheme.outer_eye_corners
        io_d = np.linalg.norm(ref[:, a] - ref[:, b], axis=-1)
        if np.all(io_d > 0.15 * box):
            return io_d, "io"
    return box, "box"


def check_parity(model: torch.nn.Module, info: ModelInfo, run, images=None, fmt: str = "",
                 path: str | Path = "", tolerance_px: float = DEFAULT_TOLERANCE_PX, detector="yunet",
                 exported_info: ModelInfo | None = None, expected_info: ModelInfo | None = None,
                 max_nme_change: float | None = None) -> ParityReport:
    """Compare backend ``run`` with the PyTorch ``model`` on detector crops of ``images``
    (files or folders; the example photos by default). ``exported_info``, the
    metadata read back from the export, must equal ``expected_info`` (``info`` unless
    given). ``max_nme_change``: judge by the NME change instead of ``tolerance_px``."""
    from facepoints.data.images import ImageError, read_image
    from facepoints.inference.predictor import Predictor

    files = image_files(images)
    if not files:
        raise ExportError("no photos for the parity check (give some with --images)")
    reference = Predictor(TorchRunner(model), info, detector=detector, refine=0)
    exported = Predictor(run, exported_info or info, detector=reference.detector, refine=0)
    diffs, dists, norms, kinds, per_image = [], [], [], set(), []
    vis_diffs, rad_diffs, trust_lost = [], [], False
    for f in files:
        try:
            img = read_image(f)
        except ImageError as e:
            raise ExportError(f"parity check photo: {e}") from None
        det = reference.detector.detect(img)
        if len(det) == 0:
            per_image.append({"image": str(f), "faces": 0})
            continue
        boxes = reference.detector.to_landmark_box(det.boxes)
        a, ra, va = reference.faces_in_boxes(img, boxes)
        b, rb, vb = exported.faces_in_boxes(img, boxes)
        a, b = a.astype(np.float64), b.astype(np.float64)
        if va is not None and vb is not None:
            vis_diffs.append(float(np.abs(va - vb).max()))
            if ra is not None and rb is not None:
                rad_diffs.append(float(np.abs(rb / np.maximum(ra, 1e-9) - 1).max()))
        trust_lost |= va is not None and vb is None and bool((expected_info or info).trust)
        d = np.abs(a - b)
        diffs.append(d.reshape(len(a), -1).max(axis=1))
        dists.append(np.linalg.norm(a - b, axis=-1).mean(axis=1))
        n, kind = _normalisers(a, np.asarray(boxes, np.float64).reshape(-1, 4), reference.scheme)
        norms.append(n)
        kinds.add(kind)
        per_image.append({"image": str(f), "faces": len(a), "max_diff_px": float(d.max())})
    faces = int(sum(len(x) for x in diffs))
    if faces == 0:
        raise ExportError(f"the face detector found no face in {len(files)} photo(s); give photos with faces (--images)")
    diffs_a, dists_a, norms_a = np.concatenate(diffs), np.concatenate(dists), np.concatenate(norms)
    return ParityReport(
        format=fmt, path=str(path), images=len(files), faces=faces,
        max_diff_px=float(diffs_a.max()), mean_diff_px=float(dists_a.mean()),
        nme_change=float(100 * np.mean(dists_a / norms_a)), normaliser="io" if kinds == {"io"} else "box",
        tolerance_px=tolerance_px,
        metadata_ok=exported_info is None or exported_info.to_json() == (expected_info or info).to_json(),
        per_image=per_image, precision=(expected_info or info).precision, max_nme_change=max_nme_change,
        visible_diff=max(vis_diffs) if vis_diffs else None,
        radius_diff=max(rad_diffs) if rad_diffs else None, trust_lost=trust_lost,
    )


def export_model(model_path: str | Path | None, fmt: str, out: str | Path, images=None, opset: int = DEFAULT_OPSET,
                 tolerance_px: float = DEFAULT_TOLERANCE_PX, detector="yunet", int8: bool = False,
                 calibration: str | None = None, calibration_faces: int | None = None,
                 max_nme_change: float | None = None, trust: bool = True) -> ParityReport:
    """Export a ``.safetensors`` model (the bundled one if None) to ``out`` and check it.

    A model with trust outputs (error radius, visibility, quality) keeps them in an ONNX
    export; ``trust=False`` leaves them out (landmarks only: the network without its trust
    modules' time), as TorchScript exports always do. Their metadata then has no trust
    calibration.

    The file appears at ``out`` only if the parity check passes; otherwise it is
    removed and :class:`ExportError` raised (its ``report`` attribute holds the numbers).

    ``int8`` (ONNX only): static int8 quantisation calibrated on ``calibration_faces``
    faces (200 by default) of ``calibration`` (a ``FORMAT:PATH`` dataset, ground-truth
    boxes) or, without it, of the example photos (detector boxes); kept only if the
    NME change against the fp32 PyTorch model is at most ``max_nme_change`` (1 point).
    """
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ExportError(f"int8 quantisation is for ONNX exports (ONNX Runtime static quantisation); "
                          f"use --format onnx, not {fmt}")
    out = Path(out)
    source = model_file(model_path)
    if out.exists() and out.resolve() == source.resolve():
        raise ExportError(f"--out {out} is the model file being exported; write the export to another file")
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; give the file to write (e.g. {out / (source.stem + '.' + fmt)})")
    for img in images or []:
        if not Path(img).exists():
            raise ExportError(f"--images {img}: no such file or folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"--out {out}: cannot create its folder ({e.strerror or e})") from None
    model, info = load_model(model_path)
    info.exported_from = {"file": source.name, "sha256": file_sha256(source)}
    trust = trust and fmt == "onnx" and model.has_trust
    if not trust:
        info.trust = {}
    tmp = tmp_for(out)
    fp32_tmp = out.with_name(f".{out.name}.fp32.tmp{os.getpid()}")
    expected, note = info, ""
    try:
        if fmt == "onnx" and int8:
            from facepoints.optimize.quantize import (
                DEFAULT_CALIBRATION_FACES,
                INT8_MAX_NME_CHANGE,
                CalibrationError,
                calibration_crops,
                int8_info,
                quantize_onnx,
            )

            write_onnx(model, info, fp32_tmp, opset=opset, trust=trust, dense=True)  # quantised convolutions
            try:
                crops, note = calibration_crops(model, info, dataset=calibration,
                                                faces=calibration_faces or DEFAULT_CALIBRATION_FACES, detector=detector)
            except (CalibrationError, FileNotFoundError, ValueError) as e:
                raise ExportError(f"calibration: {e}") from None
            expected = int8_info(info, note, len(crops))
            quantize_onnx(fp32_tmp, tmp, crops, expected)
            runner = OnnxRunner(tmp, threads=1)
            exported_info = runner.info()
            if max_nme_change is None:
                max_nme_change = INT8_MAX_NME_CHANGE
        elif fmt == "onnx":
            write_onnx(model, info, tmp, opset=opset, trust=trust)
            runner = OnnxRunner(tmp, threads=1)
            exported_info = runner.info()
        else:
            write_torchscript(model, info, tmp)
            module, exported_info = load_torchscript(tmp)
            runner = TorchRunner(module)
        report = check_parity(model, info, runner, images, fmt=fmt, path=out, tolerance_px=tolerance_px,
                              detector=detector, exported_info=exported_info, expected_info=expected,
                              max_nme_change=max_nme_change if int8 else None)
        report.calibration = note
        if not report.ok:
            what = "int8 export changes the landmarks too much" if int8 else "export does not reproduce the PyTorch model"
            err = ExportError(f"the {fmt} {what}: {report.summary()}")
            err.report = report
            raise err
        os.replace(tmp, out)
        return report
    finally:
        tmp.unlink(missing_ok=True)
        fp32_tmp.unlink(missing_ok=True)
