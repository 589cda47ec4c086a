"""Auto-labelling: photos or video frames in, a pseudo-labelled dataset out.

Every detected face becomes a sample named the 300-W way, ``PHOTO_K.jpg`` (face K of
PHOTO, a copy of the photo; for a video, PHOTO is ``VIDEO_fFRAME``), so any dataset
format can hold several faces of one photo and a split keeps them together. Each face
gets a confidence in [0, 1]: the detector's score times the model's own ``quality``
(teacher ``model`` with trust outputs, as the bundled models have: 0.5 for the median
held-out face, lower for faces it is less sure of), or else times an agreement term,
``exp(-d / 0.05)``, where ``d`` is the mean distance, in face sizes (sqrt of the
landmark box area), between two independent answers: the teacher's and the model's
on the mirrored crop (teacher ``model``), or dlib's and the model's (teacher ``dlib``).
On AFLW2000-3D's dev half (GT boxes, bundled default) quality flags the faces over 8 %
NME with AUROC 0.995 against the flip agreement's 0.978, without the second pass.
Confidences are written to ``confidence.csv`` beside the dataset; nothing is left out
unless ``min_confidence`` asks for it, and then the count is reported.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facepoints.data.crops import box_iou
from facepoints.data.images import IMAGE_SUFFIXES, ImageError, output_names, read_image, scan_images, write_image
from facepoints.data.samples import Dataset, Sample, landmark_box
from facepoints.data.video import VIDEO_SUFFIXES, VideoError, read_video
from facepoints.errors import MissingDependency


@dataclass
class LabelResult:
    dataset: Dataset
    confidence: dict[str, float]
    errors: list[str] = field(default_factory=list)  # unreadable inputs, one line each
    below_threshold: int = 0
    skipped: list[str] = field(default_factory=list)  # what the folder scans left out, one line each


def input_files(inputs, skipped: list[str] | None = None) -> list[Path]:
    """Image and video files: the files given, and those in the folders given
    (recursively); what a folder scan skipped goes to ``skipped``."""
    files, notes = scan_images(inputs, IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if skipped is not None:
        skipped.extend(notes)
    return files


def iter_frames(inputs, every: int = 1):
    """(name, RGB image or ImageError) for image files, folders and videos (every
    ``every``-th frame). Names are distinct per input (:func:`output_names`: inputs of
    one name in different folders keep their folders, ``a/face``, ``b/face``); a video's
    frames are ``NAME_fFRAME``."""
    files = input_files(inputs)
    for p, name in zip(files, output_names(files, (".jpg",))):
        if p.suffix.lower() in VIDEO_SUFFIXES:
            try:
                _, frames = read_video(p)
            except VideoError as e:
                yield name, ImageError(str(e))
                continue
            for k, frame in enumerate(frames):
                if k % every == 0:
                    yield f"{name}_f{k:06d}", frame
        else:
            try:
                yield name, read_image(p)
            except ImageError as e:
                yield name, e


class DlibLandmarker:
    """dlib's 68-point model (ERT, trained on 300-W with dlib's HOG detector boxes).

    ``raw(image, dlib_box)`` runs it on a box in dlib's own (HOG detector) convention.
    Calling it with a tight landmark box, as every other part of facepoints passes
    boxes, gives it the box it was trained on: dlib's own HOG detection of that face
    when one overlaps (``own_detector``), else the landmark box mapped back through the
    dlib-hog calibration (the detector box that calibration would turn into it).
    """

    def __init__(self):
        try:
            import dlib
            import face_recognition_models
        except ImportError:
            raise MissingDependency("the dlib teacher needs: pip install dlib-bin face_recognition_models "
                                    "'setuptools<81'") from None
        from facepoints.inference.detectors import DlibHogDetector

        self._dlib = dlib
        self._sp = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
        self._hog = DlibHogDetector(max_side=None)  # the 'dlib-hog' face detector, at full resolution

    def raw(self, image: np.ndarray, dlib_box) -> np.ndarray:
        shape = self._sp(image, self._dlib.rectangle(*(int(round(v)) for v in dlib_box)))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)

    def hog_boxes(self, image: np.ndarray) -> np.ndarray:
        """dlib's HOG detections (upsampled once), ``(K, 4)`` in dlib's convention
        (right and bottom are the last pixel inside)."""
        boxes = self._hog.detect(image).boxes.astype(np.float64)
        boxes[:, 2:] -= 1  # DlibHogDetector reports them exclusive
        return boxes

    def __call__(self, image: np.ndarray, box, own_detector: bool = True,
                 hog_boxes: np.ndarray | None = None) -> np.ndarray:
        """``hog_boxes``: this image's :meth:`hog_boxes`, when several faces of one
        image are labelled (detected once, not once per face)."""
        dbox = self._hog.calibration.unapply(np.asarray(box, np.float64))
        if own_detector:
            dets = self.hog_boxes(image) if hog_boxes is None else hog_boxes
            if len(dets):
                ious = box_iou(dets, dbox)
                if ious.max() > 0.3:
                    dbox = dets[int(np.argmax(ious))]
        return self.raw(image, dbox)


def dlib_landmarker() -> DlibLandmarker:
    return DlibLandmarker()


def label(inputs, predictor, out_dir: Path, teacher: str = "model", every: int = 1,
          min_confidence: float = 0.0, target: Path | None = None) -> LabelResult:
    """Detect and label every face; face images are written to ``out_dir``. ``target``:
    the annotation file the caller will write (a CSV), refused if it exists and is not
    this command's earlier output. A folder holding someone else's images or annotations
    is refused; this command's own (interrupted) output is resumed."""
    if teacher not in ("model", "dlib"):
        raise ValueError(f"teacher must be 'model' or 'dlib', not {teacher!r}")
    out_dir = Path(out_dir)
    _refuse_overwriting_inputs(inputs, out_dir)
    journal = out_dir / JOURNAL
    samples, conf, done, dropped = _resume_journal(out_dir, target)
    dlib_run = dlib_landmarker() if teacher == "dlib" else None
    out_dir.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    use_flip, predictor.flip = predictor.flip, False  # the mirrored pass is done here, as the probe
    log = open(journal, "a", encoding="utf-8", errors="surrogateescape")
    try:
        for photo, img in iter_frames(inputs, every):
            if photo in done:  # labelled by an earlier, interrupted run of this command
                continue
            if isinstance(img, ImageError):
                errors.append(str(img))
                continue
            faces = predictor.predict(img)
            hog = dlib_run.hog_boxes(img) if dlib_run is not None and faces else None
            for k, face in enumerate(faces, 1):
                pts, c = _face_label(face, img, predictor, dlib_run, hog, use_flip)
                if c < min_confidence:
                    dropped += 1
                    log.write(json.dumps({"below": name_of(photo, k)}) + "\n")
                    continue
                name = name_of(photo, k)
                if (out_dir / name).exists() and name not in conf:
                    raise ValueError(f"--out {out_dir}: {name} exists and was not written by this command; "
                                     "not overwritten (label into a new folder)")
                write_image(out_dir / name, img, jpeg_quality=95)
                samples.append(Sample(out_dir / name, pts, name, source=f"label:{photo}", attributes={"group": photo}))
                conf[name] = round(c, 4)
                log.write(json.dumps({"name": name, "photo": photo, "confidence": conf[name],
                                      "landmarks": np.round(pts, 3).tolist()}) + "\n")
            log.write(json.dumps({"done": photo}) + "\n")  # a killed run resumes after the last such line
            log.flush()
    finally:
        predictor.flip = use_flip
        log.close()
    skipped: list[str] = []
    input_files(inputs, skipped)
    return LabelResult(Dataset(str(out_dir), predictor.scheme, samples), conf, errors, dropped, skipped)


def _face_label(face, img: np.ndarray, predictor, dlib_run, hog, use_flip: bool) -> tuple[np.ndarray, float]:
    """One detected face's labels and confidence: the detector's score times the model's
    own quality (a model with trust outputs) or times the agreement of two predictions
    (dlib's against the model's, or the model's against its mirrored pass: 1 at the same
    points, 1/e at 5 % of the face's size apart). ``use_flip``: the labels are the mean of
    the model's two passes."""
    plain = face.landmarks
    box = landmark_box(plain)
    if dlib_run is not None:
        pts, other = dlib_run(img, box, hog_boxes=hog), plain
    else:
        other = _mirrored_prediction(predictor, img, box) if use_flip or face.quality is None else None
        pts = (plain + other) / 2 if use_flip else plain
        if face.quality is not None:
            return pts, float(face.score) * float(face.quality)
    size = float(np.sqrt(max(np.prod(box[2:] - box[:2]), 1.0)))
    d = float(np.linalg.norm(pts - other, axis=1).mean() / size)
    return pts, float(face.score) * float(np.exp(-d / 0.05))


# label's progress, one JSON line per face and per finished photo, in the output folder:
# what a re-run after an interruption reads to go on where it stopped
JOURNAL = ".facepoints-label.jsonl"


def name_of(photo: str, k: int) -> str:
    return f"{photo}_{k}.jpg"


def _resume_journal(out_dir: Path, target: Path | None = None):
    """(samples, confidences, finished photos, faces below the threshold) of an earlier
    run into ``out_dir``, from its journal. A folder that holds files but no journal is
    someone else's (a labelled dataset): refused, never written into."""
    if not out_dir.exists():
        return [], {}, set(), 0
    journal = out_dir / JOURNAL
    if not journal.is_file():
        theirs = [p for p in out_dir.iterdir() if not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES + (".pts", ".csv", ".json")]
        if (target is not None and target.is_file()) or theirs:
            raise ValueError(f"--out {target or out_dir}: already holds images or annotations that facepoints label did "
                             f"not write (e.g. {(target if target is not None and target.is_file() else theirs[0]).name}); "
                             "label writes into a new or empty folder, or into its own earlier output to go on after "
                             "an interruption")
        return [], {}, set(), 0
    samples, conf, done, below, pending = [], {}, set(), 0, []
    with open(journal, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is redone
            if "done" in rec:
                done.add(rec["done"])
                for r in (r for r in pending if "name" in r):
                    samples.append(Sample(out_dir / r["name"], np.asarray(r["landmarks"], np.float32), r["name"],
                                          source=f"label:{r['photo']}", attributes={"group": r["photo"]}))
                    conf[r["name"]] = r["confidence"]
                below += sum(1 for r in pending if "below" in r)
                pending = []
            else:
                pending.append(rec)
    return samples, conf, done, below


def _refuse_overwriting_inputs(inputs, out_dir: Path) -> None:
    """Raise before anything is written if a face image this run may write
    (``NAME_K.jpg``, ``NAME_fFRAME_K.jpg`` under ``out_dir``) is one of the inputs."""
    import re

    files = input_files(inputs)
    names = set(output_names(files, (".jpg",)))
    root = out_dir.resolve()
    for f in files:
        r = f.resolve()
        if root not in r.parents:
            continue
        m = re.fullmatch(r"(.+?)(_f\d{6})?_\d+\.jpg", r.relative_to(root).as_posix())
        if m and m.group(1) in names:
            raise ValueError(f"--out {out_dir}: labelling would overwrite the input {f}; write the labels to "
                             "another folder (inputs are never overwritten)")


def _mirrored_prediction(predictor, img: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The model's answer on the mirrored image, mapped back (the flip-consistency probe)."""
    w = img.shape[1]
    fbox = np.array([w - 1 - box[2], box[1], w - 1 - box[0], box[3]], np.float32)
    pts = predictor.landmarks_in_boxes(np.ascontiguousarray(img[:, ::-1]), fbox[None])[0]
    return predictor.scheme.flip_landmarks(pts, w)


def write_confidence(result: LabelResult, path: Path) -> None:
    # ids come from file names, which need not be valid UTF-8: their bytes are written back as they were
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "confidence"])
        for s in result.dataset.samples:
            w.writerow([s.id, result.confidence[s.id]])
