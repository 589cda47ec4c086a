"""The ``facepoints`` command: a thin layer over the Python API."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
import typer.core

import facepoints

class _Commands(typer.core.TyperGroup):
    """Every command's user errors (:class:`facepoints.errors.FacepointsError` and its
    subclasses) end as one ``error:`` line and the error's exit code, never a traceback."""

    def invoke(self, ctx):
        from facepoints.errors import FacepointsError

        try:
            return super().invoke(ctx)
        except FacepointsError as e:
            typer.echo(f"error: {str(e).strip() or e.__class__.__name__}", err=True)
            ctx.exit(e.exit_code)


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True,
                  help="Facial landmarks: train, evaluate and run landmark detectors.")

FlipOpt = typer.Option(None, "--flip/--no-flip",
                       help="also run the mirrored crop and average (default: as the model file recommends)")
RefineOpt = typer.Option(None, "--refine", min=0, max=3,
                         help="passes that crop again around the predicted landmarks after the detector box "
                              "(default: as the model file recommends, else 1; 0 is fastest)")
RuntimeOpt = typer.Option("auto", "--runtime", help="auto (ONNX Runtime for ONNX files and the bundled models), "
                          "onnx, openvino (OpenVINO: bf16 on CPUs with AMX, needs facepoints[openvino]), or torch")
ModelOpt = typer.Option(None, "--model", "-m", help="model file (.onnx, or .safetensors with the training install), "
                        "or a bundled model by name: default (used when not given) or fast")
DetectSizeOpt = typer.Option(None, "--detect-size", min=32,
                             help="the face detector sees the image downscaled to this longest side (default: as the "
                                  "model file recommends, else 960; BlazeFace's network always sees 128 px): "
                                  "smaller is faster, but misses small faces (benchmarks/detectors.md)")
DetectorOpt = typer.Option("auto", help="face detector: auto (the model file's choice: blazeface for the fast model, "
                           "yunet otherwise), yunet, blazeface, dlib-hog, haar")


class _StderrLog(logging.Handler):
    """The library's log lines (training progress, warnings) on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(self.format(record), err=True)


def show_library_log() -> None:
    logger = logging.getLogger("facepoints")
    if not any(isinstance(h, _StderrLog) for h in logger.handlers):
        logger.addHandler(_StderrLog())
        logger.setLevel(logging.INFO)


def fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def needs_training_install(command: str) -> None:
    """Fail with one line when PyTorch (the ``[train]`` extra) is not installed."""
    import importlib.util

    missing = [m for m in ("torch", "torchvision", "albumentations", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        fail(f"{command} needs the training install ({', '.join(missing)} missing): pip install 'facepoints[train]'")


def _output_paths(files: list[Path], out: Path, suffixes: tuple[str, ...]) -> dict[Path, list[Path]]:
    """Each input's output files under ``out`` (:func:`facepoints.data.images.output_names`);
    refuses, before anything is written, an ``out`` that is not a folder or cannot be
    made, and any output that would overwrite an input."""
    from facepoints.data.images import output_names

    if out.exists() and not out.is_dir():
        fail(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"--out {out}: cannot create the folder ({e.strerror or e})")
    inputs = {f.resolve() for f in files}
    targets = {f: [out / (name + sfx) for sfx in suffixes] for f, name in zip(files, output_names(files, suffixes))}
    for f, paths in targets.items():
        for t in paths:
            if t.resolve() in inputs:
                fail(f"--out {out}: {t} would overwrite the input {t.resolve()}; write the results to another folder")
    return targets


def _dataset_files(ds) -> list[Path]:
    """A dataset's images and annotation files: what no output may overwrite."""
    files = [s.image for s in ds.samples]
    files += [Path(s.source.rsplit(":", 1)[0]) for s in ds.samples if s.source]
    return files


def _expand_images(paths: list[Path]) -> list[Path]:
    """The images to run on; what a folder scan skipped is said on stderr."""
    from facepoints.data.images import scan_images

    files, skipped = scan_images(paths)
    for line in skipped:
        typer.echo(f"note: {line}", err=True)
    return files


@app.command()
def predict(
    images: list[str] = typer.Argument(..., help="image files, folders, glob patterns ('photos/**/*.jpg'), or "
                                       "@LIST (a text file with one path per line, or a CSV whose first column is one)"),
    model: Optional[Path] = ModelOpt,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write NAME.png (annotated) and NAME.json per image here"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object per image (JSON lines) on stdout"),
    jsonl: Optional[Path] = typer.Option(None, "--jsonl", help="append one JSON line per image to this file, flushed as "
                                         "it goes; a re-run with the same file skips the images it holds"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="processes, one single-threaded model each "
                                          "(default: the machine's cores, at most one per image)"),
    engine: str = typer.Option("local", "--engine", help="local (worker processes) or ray (a Ray Data actor pool, "
                               "one model per actor: a local Ray instance, or the cluster of --ray-address / RAY_ADDRESS; "
                               "needs facepoints[ray])"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="with --engine ray: the cluster to join "
                                              "(auto, ray://HEAD:10001); default: RAY_ADDRESS, else a local instance"),
    detector: str = DetectorOpt,
    detect_size: Optional[int] = DetectSizeOpt,
    threads: int = typer.Option(1, min=1, help="CPU threads for the network and OpenCV (with one worker; "
                                "each of several workers has one)"),
    runtime: str = RuntimeOpt,
    flip: Optional[bool] = FlipOpt,
    refine: Optional[int] = RefineOpt,
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="a progress bar with rate and ETA "
                                            "(default: on a terminal with --jsonl)"),
    to_scheme: Optional[str] = typer.Option(None, "--to-scheme", help="report the landmarks in another scheme the "
                                            "geometry defines (ibug68 -> five; wflw98 -> ibug68 or five)"),
):
    """Find every face in each image and its landmarks."""
    from facepoints.data.outputs import guard_output
    from facepoints.inference import batch

    files, notes = batch.expand_inputs(images)
    for line in notes:
        typer.echo(f"note: {line}", err=True)
    if not files:
        fail("no images given (folders are searched for .jpg/.png/...)")
    options = {"model": str(model) if model is not None else None, "detector": detector, "flip": flip,
               "refine": refine, "detect_size": detect_size, "inputs": [str(f) for f in files], "to_scheme": to_scheme,
               "runtime": runtime}
    if engine not in ("local", "ray"):
        fail(f"--engine {engine}: choose local or ray")
    if ray_address is not None and engine != "ray":
        fail("--ray-address goes with --engine ray")
    if engine == "ray":
        from facepoints.inference.ray_engine import _ray

        _ray()  # one line if Ray is not installed, before any work
    n_workers = min(workers or batch.default_workers(), len(files))
    # the model and detector are checked here, once, before any image (one line if they cannot work)
    predictor = facepoints.load(model, detector=detector, threads=threads, flip=flip, detect_size=detect_size,
                                refine=refine, runtime=runtime)
    if predictor._detector_spec is not None:
        predictor.detector
    if to_scheme is not None:
        from facepoints.data.convert import can_convert

        if not can_convert(predictor.scheme.name, to_scheme):
            fail(f"--to-scheme {to_scheme}: no conversion from this model's {predictor.scheme.name} points")
    targets = _output_paths(files, out, (".png", ".json")) if out else {}
    done: set[str] = set()
    sink_file = None
    if jsonl is not None:
        guard_output(jsonl, inputs=files)
        done = batch.done_images(jsonl)
        if done:
            typer.echo(f"{jsonl}: {len(done & {str(f) for f in files})} of {len(files)} image(s) already done, skipped",
                       err=True)
        jsonl.parent.mkdir(parents=True, exist_ok=True)
        sink_file = open(jsonl, "a", encoding="utf-8", errors="surrogateescape")

    def sink(line: batch.Line) -> None:  # the JSON text comes made from the workers
        if sink_file is not None:
            sink_file.write(line.text + "\n")
            sink_file.flush()
        if line.error:
            typer.echo(f"error: {line.error}", err=True)
        elif as_json:
            typer.echo(line.text)
        elif sink_file is None:
            typer.echo(f"{line.image}: {line.faces} face(s)")

    show = progress if progress is not None else (jsonl is not None and sys.stderr.isatty())
    local_one = n_workers == 1 and engine == "local"
    if local_one:  # in this process, on the predictor just checked, on --threads cores (OpenCV's too)
        batch._PREDICTOR, batch._OPTIONS = predictor, options
        import cv2

        cv2.setNumThreads(threads)
    try:
        report = batch.run_batch(files, options, sink, workers=(workers if engine == "ray" else n_workers),
                                 targets=targets, done=done, progress=show, preloaded=local_one,
                                 factory=facepoints.load, engine=engine, ray_address=ray_address, lines=True)
    finally:
        if sink_file is not None:
            sink_file.close()
    if jsonl is not None:
        typer.echo(f"{jsonl}: {report.written} image(s) written, {report.skipped} skipped as done", err=True)
    if report.errors:
        typer.echo(f"{len(report.errors)} of {len(files)} image(s) could not be read", err=True)
        raise typer.Exit(1)


@app.command()
def evaluate(
    dataset: str = typer.Argument(..., help="FORMAT:PATH, e.g. 300w:DIR"),
    model: Optional[Path] = ModelOpt,
    use_detector: bool = typer.Option(False, "--detector", help="boxes from the face detector instead of the ground truth"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    ced: Optional[Path] = typer.Option(None, help="write the CED plot to this PNG"),
    skip_missing: bool = typer.Option(False, help="leave out samples whose image is missing (counted)"),
    threads: int = typer.Option(2, min=1, help="CPU threads for the network"),
    flip: Optional[bool] = FlipOpt,
    refine: Optional[int] = RefineOpt,
):
    """NME (inter-ocular, inter-pupil, box), FR@0.1 and AUC@0.1 on an annotated dataset."""
    import numpy as np

    from facepoints.data.formats import read_dataset
    from facepoints.data.samples import AnnotationError
    from facepoints.evaluation.evaluate import evaluate as run
    from facepoints.evaluation.metrics import plot_ced
    from facepoints.models.info import ModelFileError

    try:
        predictor = facepoints.load(model, threads=threads, flip=flip, refine=refine)
        ds = read_dataset(dataset, skip_missing=skip_missing)
        result = run(ds, predictor, use_detector=use_detector, progress=not as_json and sys.stderr.isatty())
    except (ModelFileError, AnnotationError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    s = result.summary
    bad = s.get("unreadable_images", [])
    for msg in bad:  # like predict: report each, go on, exit 1 at the end
        typer.echo(f"error: {msg}", err=True)
    if ds.warnings:
        s["warnings"] = ds.warnings
    for msg in s.get("labels_outside_image", []):
        typer.echo(f"warning: {msg}", err=True)
    if ced:
        errors = result.errors[np.isfinite(result.errors)]
        plot_ced({model.stem if model else "bundled model": errors}, ced, inputs=_dataset_files(ds))
        typer.echo(f"wrote the CED plot to {ced}", err=True)
    if as_json:
        typer.echo(json.dumps(s))
    else:
        typer.echo(f"{dataset}: {s['n']} faces (box from {s['box']}, {s['n_missed']} missed)")
        for k in ("nme_io", "nme_ip", "nme_box"):
            if s.get(k) is not None:
                typer.echo(f"  {k:8s} {s[k]:.3f} %")
        if s.get("n"):
            typer.echo(f"  fr10     {s['fr10']:.2f} %\n  auc10    {s['auc10']:.4f}")
        if s.get("pose"):
            p = s["pose"]
            cells = [f"{b} {p[b]:.2f} % ({p[f'n {b}']})" for b in ("0-30", "30-60", "60-90") if b in p]
            typer.echo("  by |yaw| (NME box): " + ", ".join(cells)
                       + (f"; balanced {p['balanced']:.2f} %" if "balanced" in p else ""))
    if bad:
        typer.echo(f"{len(bad)} of {s['n_total']} image(s) could not be read (counted as missed)", err=True)
        raise typer.Exit(1)


@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="training config YAML (see configs/); or give --data"),
    data: Optional[list[str]] = typer.Option(None, "--data", help="train on this FORMAT:PATH dataset (repeatable) "
                                             "without a YAML: the own-data template (--print-config shows it), "
                                             "fine-tuned from the bundled default's trunk"),
    print_config: bool = typer.Option(False, "--print-config", help="with CONFIG: print it as it will run (base "
                                      "merged, set: and --set applied, paths resolved) and stop; without: the "
                                      "own-data template (with --data's sources) as a commented YAML to start from"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUTPUT/last.pt"),
    output: Optional[str] = typer.Option(None, help="override the config's output folder"),
    epochs: Optional[int] = typer.Option(None, help="override optim.epochs"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override any config key, e.g. --set model.input_size=96"),
    progress: bool = typer.Option(True, help="progress bars"),
    detector_fit: bool = typer.Option(True, "--detector-fit/--no-detector-fit", help="for a scheme other than the 68 "
                                      "iBUG points: fit the face detectors to the model's crops at the end"),
):
    """Train a landmark model from a YAML config (or --data without one); writes OUTPUT/best.safetensors."""
    from facepoints.training.config import own_data_config

    if config is not None and data:
        fail("give a config or --data, not both (put the sources in the config's data.train)")
    if print_config and config is None:
        typer.echo(own_data_config(list(data or []), epochs or 30, output), nl=False)
        return
    if config is None and not data:
        fail("give a training config (CONFIG.yaml) or --data FORMAT:PATH")
    needs_training_install("train")
    if config is None:  # the template, written beside the output so the run can be resumed and inspected
        out_dir = Path(output or "runs/mine")
        out_dir.mkdir(parents=True, exist_ok=True)
        config = out_dir / "train.yaml"
        if not config.exists():
            config.write_text(own_data_config([_abs_spec(d) for d in data], epochs or 30, str(out_dir.resolve())))
        output = None
        epochs = None
    from facepoints.training.config import ConfigError, load_config
    from facepoints.training.loop import train as run

    import yaml

    overrides = {k: v for k, v in {"output": output, "optim.epochs": epochs}.items() if v is not None}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    if print_config:
        try:
            cfg = load_config(config, overrides)
        except (ConfigError, ValueError, FileNotFoundError) as e:
            fail(str(e))
        typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), nl=False)
        return
    show_library_log()
    try:
        cfg = load_config(config, overrides)
        best = run(cfg, resume=resume, progress=progress and sys.stderr.isatty())
    except (ConfigError, FileExistsError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    from facepoints.models.info import read_info

    if read_info(best).landmark_scheme.num_points != 68 and detector_fit:
        _fit_detectors(cfg, best)
    typer.echo(f"best model: {best}")


def _abs_spec(spec: str) -> str:
    fmt, sep, path = spec.partition(":")
    return f"{fmt}:{Path(path).resolve()}" if sep else spec


def _fit_detectors(cfg, model_path: Path, detectors=("yunet", "blazeface")) -> None:
    """Fit the face detectors to a model's own crops on its training faces, write them into
    the model file, and report whole-image NME beside GT-box NME on the validation split."""
    from facepoints.deploy.detector_fit import calibrate_detectors
    from facepoints.evaluation.evaluate import evaluate as run_eval
    from facepoints.training.loop import make_splits

    splits = make_splits(cfg)
    fits = calibrate_detectors(model_path, splits.train.samples, detectors)
    for f in fits:
        if f.calibration is None:
            typer.echo(f"detector {f.name}: refused for this model ({f.reason})", err=True)
            continue
        typer.echo(f"detector {f.name}: fitted on {f.matched} of {f.faces} training faces: {f.calibration.to_dict()}",
                   err=True)
        if len(splits.val):
            gt = run_eval(splits.val, facepoints.load(model_path, detector=None)).summary
            whole = run_eval(splits.val, facepoints.load(model_path, detector=f.name), use_detector=True).summary
            key = gt.get("primary", "io")
            typer.echo(f"  validation ({len(splits.val)} faces): NME ({key}) {gt.get('nme_' + key, float('nan')):.2f} % "
                       f"from ground-truth boxes, {whole.get('nme_' + key, float('nan')):.2f} % on whole photos "
                       f"({whole['n_missed']} missed)", err=True)


@app.command("calibrate-detectors")
def calibrate_detectors_cmd(
    config: Path = typer.Argument(..., help="the model's training config: its training faces are fitted on"),
    model: Path = typer.Argument(..., help="model file (.safetensors)"),
    out: Path = typer.Option(..., "--out", "-o", help="the model file to write (with the fitted calibrations)"),
    detectors: str = typer.Option("yunet,blazeface", help="comma-separated face detectors to fit"),
):
    """Fit face detectors to a model's own crops (any point scheme), store the fits in the
    model file, and report whole-image vs ground-truth-box NME on the validation split."""
    needs_training_install("calibrate-detectors")
    import shutil

    from facepoints.training.config import load_config

    if out.resolve() == model.resolve():
        fail(f"--out {out} is the input model; write the calibrated model to a new file")
    cfg = load_config(config)
    shutil.copyfile(model, out)
    _fit_detectors(cfg, out, tuple(d.strip() for d in detectors.split(",") if d.strip()))
    typer.echo(f"wrote {out}")


@app.command("augment-preview")
def augment_preview(
    config: Path = typer.Argument(..., help="training config YAML"),
    out: Path = typer.Option(Path("augment-preview.png"), "--out", "-o"),
    faces: int = typer.Option(8, help="how many faces"),
    variants: int = typer.Option(4, help="augmented copies of each face"),
    seed: int = typer.Option(0),
):
    """A contact sheet of augmented training crops with their landmarks (subject's
    right red, left blue, midline green) to check that labels follow the image."""
    needs_training_install("augment-preview")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        fail(f"--out {out}: the contact sheet is an image; give a .png or .jpg path")
    import numpy as np

    from facepoints.data.augment import apply, build_transform, contact_sheet
    from facepoints.data.crop_cache import build_cache
    from facepoints.training.config import load_config
    from facepoints.training.loop import make_splits

    cfg = load_config(config)  # a ConfigError is one error: line (the command group catches it)
    splits = make_splits(cfg)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(splits.train), min(faces, len(splits.train)), replace=False)
    sub = splits.train.subset(sorted(pick))
    cache = build_cache(sub, cfg.model.input_size, cfg.model.crop_scale, progress=False)
    t = build_transform(cfg.augment, cfg.model.input_size, train=True)
    t.set_random_seed(seed)
    imgs, pts = [], []
    for i in range(len(cache)):
        for _ in range(variants):
            a, b = apply(t, cache.images[i], cache.points[i], splits.train.scheme)
            imgs.append(a)
            pts.append(b)
    contact_sheet(imgs, pts, out, cols=variants, scheme=splits.train.scheme)
    typer.echo(f"wrote {out}")


@app.command("profile-faces")
def profile_faces(
    config: Path = typer.Argument(..., help="training config YAML: its training split is what gets turned"),
    out: Path = typer.Option(..., "--out", "-o", help="folder to write (300-W layout, with yaw.csv and visible.csv)"),
    source: Optional[list[str]] = typer.Option(None, "--source", help="only sources whose FORMAT:PATH contains this "
                                               "text (repeatable); default: every 68-point training source"),
    copies: int = typer.Option(1, min=1, max=10, help="turned copies of each face"),
    low: float = typer.Option(25.0, min=0, max=90, help="smallest target |yaw|, degrees"),
    high: float = typer.Option(80.0, min=0, max=90, help="largest target |yaw|, degrees"),
    seed: int = typer.Option(0),
    split: str = typer.Option("train", "--split", help="train (training data), or val: turned copies of the "
                              "validation faces, to calibrate and measure on (data.trust_calibration; training on "
                              "them is refused)"),
):
    """Large-pose faces made from the config's training faces (face profiling, as 300W-LP):
    fit a 3-D face to the 68 labels, turn it in yaw, warp the photo; the labels follow the
    3-D face, far-side points included. --split val turns the validation faces instead, for
    calibration and measurement only."""
    needs_training_install("profile-faces")
    import json as _json

    from facepoints.data.profiling import write_profiled
    from facepoints.training.config import load_config
    from facepoints.training.loop import make_splits

    if low > high:
        fail(f"--low {low} is above --high {high}")
    if split not in ("train", "val"):
        fail(f"--split {split}: choose train or val")
    if out.exists() and any(out.iterdir()):
        fail(f"{out}: exists and is not empty; choose a new folder")
    cfg = load_config(config)  # a ConfigError is one error: line (the command group catches it)
    splits = make_splits(cfg)
    part = splits.train if split == "train" else splits.val
    picked = [i for i, s in enumerate(part.samples)
              if not source or any(t in s.attributes["source"] for t in source)]
    if not picked:
        fail(f"{config}: no {split} face comes from a source containing {source}")
    try:
        n = write_profiled(part.subset(picked, "profiled"), out, copies, seed, low, high)
    except ValueError as e:
        fail(str(e))
    (out / "provenance.json").write_text(_json.dumps(
        {"config": str(config.resolve()), "split": split,
         "sources": sorted({part.samples[i].attributes["source"] for i in picked}),
         "faces": len(picked), "copies": copies, "yaw_range": [low, high], "seed": seed,
         "method": "facepoints.data.profiling (MediaPipe canonical face, Apache-2.0)"}, indent=1))
    typer.echo(f"wrote {n} turned faces from {len(picked)} {'training' if split == 'train' else 'validation'} "
               f"faces to {out}")


@app.command("calibrate-trust")
def calibrate_trust(
    config: Path = typer.Argument(..., help="training config YAML: its validation split calibrates"),
    model: Path = typer.Argument(..., help="model file (.safetensors) trained with model.pip_trust: true"),
    out: Path = typer.Option(..., "--out", "-o", help="the calibrated model file to write (not the input)"),
    as_json: bool = typer.Option(False, "--json", help="print the trust metrics as JSON on stdout"),
    coverage: float = typer.Option(0.9, "--coverage", min=0.5, max=0.99, help="share of held-out errors each "
                                   "point's error radius holds (fitted on the validation split and "
                                   "data.trust_calibration)"),
):
    """Fit a model's trust calibration (90 % error radius per point, quality scale) on the
    config's validation split and write the model with it; reports coverage, rank
    correlation and failure detection there and on the config's data.pose_val sets."""
    needs_training_install("calibrate-trust")
    import json as _json

    from facepoints.models.info import ModelFileError
    from facepoints.training.config import ConfigError, load_config
    from facepoints.training.loop import calibrate_model

    if out.resolve() == model.resolve():
        fail(f"--out {out} is the input model; write the calibrated model to a new file")
    try:
        metrics = calibrate_model(load_config(config), model, out, coverage)
    except (ConfigError, ModelFileError) as e:
        fail(str(e))
    if as_json:
        typer.echo(_json.dumps(metrics))
    else:
        for k, v in metrics.items():
            typer.echo(f"{k:40s} {v:.4f}")
        typer.echo(f"wrote {out}", err=True)


@app.command()
def info(model: Optional[Path] = typer.Option(None, "--model", "-m", help="model file (.safetensors or an exported "
                                              ".onnx), or a bundled model by name (default, fast)"),
         as_json: bool = typer.Option(False, "--json", help="print the whole metadata as JSON instead")):
    """A model's card (bundled models: the card beside their weights) and a summary of its
    metadata; --json prints the metadata itself (scheme, input, recipe, metrics, trust)."""
    from facepoints.models.info import ModelFileError, bundled_name, model_card, read_info

    try:
        if model is not None and model.suffix.lower() == ".onnx":
            from facepoints.inference.runtime import OnnxRunner

            meta = OnnxRunner(model).info()
        else:
            meta = read_info(model)
    except ModelFileError as e:
        fail(str(e))
    if as_json:
        typer.echo(meta.to_json())
        return
    card = model_card(model)
    if card:
        typer.echo(card.rstrip() + "\n")
    scheme = meta.landmark_scheme
    rec = meta.recipe.get("inference", {}) if isinstance(meta.recipe.get("inference"), dict) else {}
    metric = meta.metrics.get("val_nme_io")
    typer.echo(f"model:      {model or 'default'}" + (" (bundled)" if bundled_name(model) else ""))
    typer.echo(f"points:     {scheme.num_points} ({scheme.name})")
    typer.echo(f"network:    {meta.backbone} / {meta.head}, {meta.input_size} px crops at {meta.crop_scale} x the "
               f"landmark box, {meta.precision}")
    typer.echo(f"inference:  detector {rec.get('detector') or 'yunet'}, refine {rec.get('refine', 1)}, "
               f"flip {rec.get('flip', False)}")
    typer.echo(f"trust:      {'calibrated on ' + str(meta.trust.get('faces')) + ' faces' if meta.trust else 'none'}")
    if metric is not None:
        typer.echo(f"validation: NME {metric:.2f} % (inter-ocular, epoch {meta.metrics.get('epoch')})")
    typer.echo(f"data:       {meta.training_data}")
    typer.echo("(--json for the whole metadata)")


@app.command("export")
def export_cmd(
    model: Optional[Path] = ModelOpt,
    fmt: str = typer.Option(..., "--format", "-f", help="onnx or torchscript"),
    out: Path = typer.Option(..., "--out", "-o", help="the file to write (.onnx, .pt/.ts)"),
    images: Optional[list[Path]] = typer.Option(None, "--images", help="photos or folders for the parity check; default: examples/"),
    opset: int = typer.Option(17, help="ONNX opset"),
    tolerance: float = typer.Option(0.1, help="largest landmark difference to the PyTorch model allowed, in image pixels"),
    as_json: bool = typer.Option(False, "--json", help="print the parity report as JSON on stdout"),
    int8: bool = typer.Option(False, "--int8", help="ONNX only: static int8 quantisation (ONNX Runtime, QOperator, "
                              "uint8 activations, per-channel int8 weights) calibrated on real face crops"),
    calibration: Optional[str] = typer.Option(None, "--calibration", help="with --int8: FORMAT:PATH dataset to calibrate "
                                              "on (ground-truth boxes); default: the example photos (detector boxes)"),
    calibration_faces: int = typer.Option(200, "--calibration-faces", help="with --int8: at most this many calibration faces"),
    max_nme_change: float = typer.Option(1.0, "--max-nme-change", help="with --int8: largest NME change to the fp32 "
                                         "model allowed (mean landmark distance, % of inter-ocular distance)"),
    trust: bool = typer.Option(True, "--trust/--no-trust", help="ONNX: keep a trust model's error radius, visibility "
                               "and quality (--no-trust: landmarks only, without the trust modules' time; "
                               "TorchScript exports never have them)"),
):
    """Export a model to ONNX or TorchScript (metadata included) and check that it
    reproduces the PyTorch landmarks on real photos; the file is kept only if it does.
    With --int8 (ONNX) the check reports the landmark difference and the NME change
    against the fp32 model, and refuses only above --max-nme-change."""
    needs_training_install("export")
    from facepoints.deploy.export import ExportError, export_model
    from facepoints.models.info import ModelFileError

    if int8 and fmt.lower() != "onnx":
        fail(f"--int8 works with --format onnx only (ONNX Runtime static quantisation), not {fmt}")
    if calibration is not None and not int8:
        fail("--calibration is for --int8 exports")
    try:
        report = export_model(model, fmt, out, images=images, opset=opset, tolerance_px=tolerance, int8=int8,
                              calibration=calibration, calibration_faces=calibration_faces,
                              max_nme_change=max_nme_change, trust=trust)
    except ModelFileError as e:
        fail(str(e))
    except ExportError as e:
        if as_json and getattr(e, "report", None) is not None:
            typer.echo(json.dumps(e.report.to_dict()))
        fail(str(e), code=1)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        typer.echo(report.summary())
        typer.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port"),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="model file (.safetensors or .onnx), or a bundled model by name (default, fast)"),
    detector: str = DetectorOpt,
    detect_size: Optional[int] = DetectSizeOpt,
    threads: int = typer.Option(1, min=1, help="CPU threads per inference"),
    max_concurrency: int = typer.Option(2, min=1, help="images decoded and run at the same time"),
    max_upload_mb: float = typer.Option(10.0, min=0.001, max=4096, help="largest upload accepted, MiB"),
    max_megapixels: float = typer.Option(25.0, min=0.001, max=1000, help="largest image accepted, megapixels"),
    max_faces: int = typer.Option(256, min=1, max=100000, help="faces per image at most (413 beyond); they run in "
                                  "batches of 32, so memory stays bounded"),
    request_timeout: float = typer.Option(20.0, min=0.1, help="seconds a client may take to send a whole request"),
    max_connections: int = typer.Option(128, min=1, help="open connections at most (503 beyond)"),
    flip: Optional[bool] = FlipOpt,
    refine: Optional[int] = RefineOpt,
):
    """Serve landmarks over HTTP: POST /v1/landmarks (multipart field 'image'),
    GET /healthz, OpenAPI schema at /openapi.json. A client gets --request-timeout
    seconds to send its whole request; at most --max-connections at once."""
    from facepoints.deploy.service import create_app, run_server
    from facepoints.models.info import ModelFileError

    try:
        predictor = facepoints.load(model, detector=detector, threads=threads, flip=flip,
                                        detect_size=detect_size, refine=refine, max_faces=max_faces,
                                        memory_arena=False)  # memory goes back after each request
    except (ModelFileError, ValueError, ImportError) as e:
        fail(str(e))
    import math

    if not (math.isfinite(max_upload_mb) and math.isfinite(max_megapixels)):
        fail("--max-upload-mb and --max-megapixels must be finite numbers")
    api = create_app(predictor, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                     max_pixels=int(max_megapixels * 1e6), max_concurrency=max_concurrency)
    try:
        run_server(api, host=host, port=port, request_timeout=request_timeout, max_connections=max_connections)
    except OSError as e:  # a busy port, an address we cannot bind
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}")


@app.command()
def review(
    dataset: str = typer.Argument(..., help="FORMAT:PATH, e.g. 300w:DIR"),
    report: Optional[Path] = typer.Option(None, "--report", help="a 'facepoints clean' report: its flagged samples come first"),
    port: int = typer.Option(8765, min=0, max=65535, help="TCP port on 127.0.0.1 (0: any free port)"),
    skip_missing: bool = typer.Option(False, help="leave out samples whose image is missing (counted)"),
):
    """Review samples by hand in the browser: drag points, accept or drop. Decisions are
    saved to PATH.corrections.json (the annotations are never changed); every reader
    applies that file. Listens on 127.0.0.1 only."""
    from facepoints.curation.review import ReviewState, make_server
    from facepoints.data.samples import AnnotationError

    try:
        state = ReviewState(dataset, report=report, skip_missing=skip_missing)
        server = make_server(state, port)
    except (AnnotationError, ValueError, FileNotFoundError, OSError) as e:
        fail(str(e))
    typer.echo(f"{dataset}: {len(state.order)} samples ({len(state.flags)} flagged first); "
               f"corrections go to {state.sidecar}")
    if state.unknown_flagged:
        typer.echo(f"warning: {len(state.unknown_flagged)} flagged id(s) in the report are not in the dataset", err=True)
    typer.echo(f"open {server.url}  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
def stats(
    dataset: str = typer.Argument(..., help="FORMAT:PATH, e.g. 300w:DIR"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for yaw.png, pitch.png, roll.png and pose.json"),
    skip_missing: bool = typer.Option(False, help="leave out samples whose image is missing (counted)"),
):
    """Head pose of every face (yaw, pitch, roll from the landmarks against a generic 3-D
    face): histograms as PNGs and a JSON summary with each sample's angles."""
    from facepoints.data.formats import read_dataset
    from facepoints.data.outputs import write_text
    from facepoints.data.pose import PoseError, dataset_poses, plot_histograms, pose_summary
    from facepoints.data.samples import AnnotationError

    try:
        ds = read_dataset(dataset, skip_missing=skip_missing)
        table = dataset_poses(ds.samples, ds.scheme)
    except (AnnotationError, PoseError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    summary = {"dataset": dataset, "warnings": ds.warnings, **pose_summary(table)}
    files = _dataset_files(ds)
    plot_histograms(summary, out, title=Path(dataset.split(":", 1)[1]).name, inputs=files)
    write_text(out / "pose.json", json.dumps(summary, indent=1), inputs=files)
    y = summary["yaw"]
    typer.echo(f"{dataset}: {summary['n_estimated']} of {summary['n']} faces; yaw mean {y['mean']:.1f}, "
               f"std {y['std']:.1f}, |yaw| > 45: {y['abs_over_45']}" if y["mean"] is not None else
               f"{dataset}: no pose could be estimated")
    typer.echo(f"wrote {out}/yaw.png, pitch.png, roll.png, pose.json")


@app.command()
def clean(
    dataset: str = typer.Argument(..., help="FORMAT:PATH, e.g. 300w:DIR"),
    model: Optional[Path] = ModelOpt,
    no_model: bool = typer.Option(False, "--no-model", help="heuristics only: no model residuals"),
    as_json: bool = typer.Option(False, "--json", help='print one JSON object on stdout: {"n", "flagged": [{"id", "score", "reasons"}]}'),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write report.csv, report.json and report.html here"),
    threshold: Optional[float] = typer.Option(None, help="flag samples scoring at least this (robust z units); default 5"),
    margin: float = typer.Option(0.1, help="points may lie this fraction of the image size outside it"),
    skip_missing: bool = typer.Option(False, help="leave out samples whose image is missing (counted)"),
    threads: int = typer.Option(1, min=1, help="CPU threads for the network"),
    folds: int = typer.Option(0, help="out-of-fold model residuals: train this many models (k-fold by group) "
                              "with --fold-config, each scoring the faces it never saw (0: use --model)"),
    fold_config: Optional[Path] = typer.Option(None, help="training config for the fold models (its data section is ignored)"),
    detector: str = typer.Option("yunet", help="face detector (with the model checks): its box for each face starts "
                                 "the model's crop, so wrong labels do not choose it, and is compared with the labels' "
                                 "box; 'none': crops from the label boxes, no detector checks"),
):
    """Find suspicious annotations: score every sample with label heuristics and a
    model's residuals, rank them, and report the flagged ones with their reasons.
    Feed report.json to a training config's data.exclude to leave them out."""
    from facepoints.curation.cleaning import DEFAULT_THRESHOLD, score_dataset, write_report
    from facepoints.data.formats import read_dataset
    from facepoints.data.samples import AnnotationError
    from facepoints.models.info import ModelFileError, bundled_name, model_file

    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    try:
        ds = read_dataset(dataset, skip_missing=skip_missing)
        predictor, name, predictions, detections = None, None, None, None
        if folds:
            if fold_config is None:
                fail("--folds needs --fold-config (a training config for the fold models)")
            detections = _detections(ds, detector, as_json)
            predictions = _out_of_fold(ds, fold_config, folds, threads, detections)
            name = f"{folds}-fold models from {fold_config}"
        elif not no_model:  # a bundled model runs its ONNX file: no PyTorch needed
            predictor = facepoints.load(model, detector=None, threads=threads)
            name = str(model_file(model) if bundled_name(model) is None else model_file(model).name)
        face_detector = None
        if detector.lower() != "none" and detections is None and predictor is not None:
            from facepoints.inference.detectors import get_detector

            face_detector = get_detector(detector)  # in the same pass over the images as the model
        report = score_dataset(ds, predictor, predictions, threshold=threshold, margin=margin, model_name=name,
                               progress=not as_json and sys.stderr.isatty(), detections=detections,
                               detector=face_detector)
    except (ModelFileError, AnnotationError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    if out:
        write_report(report, ds, out)
    if as_json:
        typer.echo(json.dumps(report.to_json()))
    else:
        flagged = report.flagged
        typer.echo(f"{dataset}: {report.n} samples, {len(flagged)} flagged (score >= {threshold:g}), "
                   f"model: {report.model or 'none'}")
        for s in flagged[:50]:
            typer.echo(f"  {s.score:7.1f}  {s.id}  {s.reasons[0] if s.reasons else ''}")
        if len(flagged) > 50:
            typer.echo(f"  ... {len(flagged) - 50} more" + (f" in {out}/report.csv" if out else " (see --out)"))
        if out:
            typer.echo(f"wrote {out}/report.csv, report.json, report.html")
    for w in report.warnings:
        typer.echo(f"warning: {w}", err=True)

def _detections(ds, detector: str, quiet: bool):
    """Each sample's matched face detection (cleaning.matched_detections), or None for 'none'."""
    if detector.lower() == "none":
        return None
    from facepoints.curation.cleaning import matched_detections
    from facepoints.inference.detectors import get_detector

    return matched_detections(ds, get_detector(detector), progress=not quiet and sys.stderr.isatty())


def _out_of_fold(ds, config: Path, k: int, threads: int, detections=None):
    """Train ``k`` models, each without one fold, and predict that fold."""
    import tempfile

    from facepoints.curation.cleaning import out_of_fold_predictions
    from facepoints.data.samples import Dataset
    from facepoints.training.config import load_config
    from facepoints.data.splits import Splits
    from facepoints.training.loop import train

    show_library_log()
    # The fold models train on the dataset being cleaned: the config's data.train, if
    # any, is replaced (a placeholder keeps a config without a data section valid).
    base = load_config(config, {"data.train": [f"fold:{ds.name}"]})
    work = Path(tempfile.mkdtemp(prefix="facepoints-folds-"))
    counter = iter(range(k))

    def make_predictor(train_ds):
        cfg = base.model_copy(deep=True)
        cfg.output = str(work / f"fold{next(counter)}")
        cfg.threads = threads
        splits = Splits(train_ds, Dataset("val", train_ds.scheme, []), [1] * len(train_ds))
        best = train(cfg, progress=False, splits=splits)  # its log goes to stderr: stdout is for --json
        return facepoints.load(best, detector=None, threads=threads)

    return out_of_fold_predictions(ds, make_predictor, k=k, start_boxes=detections)


@app.command("label")
def label_cmd(
    inputs: list[Path] = typer.Argument(..., help="photos, folders or videos"),
    out: str = typer.Option(..., "--out", "-o", help="FORMAT:PATH to write, e.g. 300w:labelled/ or csv:labelled/labels.csv"),
    teacher: str = typer.Option("model", help="who labels: 'model' (facepoints) or 'dlib' (needs the dlib extra)"),
    model: Optional[Path] = ModelOpt,
    every: int = typer.Option(1, min=1, help="for videos: label every N-th frame"),
    min_confidence: float = typer.Option(0.0, help="leave out faces below this confidence (counted)"),
    threads: int = typer.Option(2, min=1, help="CPU threads for the network"),
):
    """Detect faces in new photos or video frames and write pseudo-labels as a dataset,
    with a per-face confidence in confidence.csv beside it."""
    from facepoints.data.formats import parse_spec, write_dataset
    from facepoints.curation.labeling import label, write_confidence
    from facepoints.models.info import ModelFileError

    try:
        _, path = parse_spec(out)
        predictor = facepoints.load(model, threads=threads)
        folder = path.parent if path.suffix else path
        result = label(inputs, predictor, folder, teacher=teacher, every=every, min_confidence=min_confidence,
                       target=path if path.suffix else None)
        write_dataset(result.dataset, out)
    except (ModelFileError, ValueError, ImportError) as e:
        fail(str(e))
    write_confidence(result, folder / "confidence.csv")
    for line in result.skipped:
        typer.echo(f"note: {line}", err=True)
    for e in result.errors:
        typer.echo(f"error: {e}", err=True)
    typer.echo(f"{len(result.dataset)} face(s) labelled into {out}; confidences in {folder / 'confidence.csv'}"
               + (f"; {result.below_threshold} below --min-confidence left out" if result.below_threshold else ""))
    if result.errors:
        raise typer.Exit(1)


@app.command()
def track(
    video: Path = typer.Argument(..., help="a video file (.mp4, .avi, ... anything OpenCV decodes)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write the video with landmarks and track ids drawn here (mp4)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout: fps, frames and every frame's faces"),
    model: Optional[Path] = ModelOpt,
    detect_every: int = typer.Option(30, min=1, help="run the face detector every N frames (and at once when a face is lost)"),
    smooth: bool = typer.Option(True, "--smooth/--no-smooth", help="One Euro smoothing of each face's landmarks"),
    min_cutoff: float = typer.Option(0.5, help="One Euro: cutoff for a still face, Hz (lower: steadier, more lag)"),
    beta: float = typer.Option(30.0, help="One Euro: cutoff rise per face size per second of speed (higher: less lag)"),
    detector: str = DetectorOpt,
    detect_size: Optional[int] = DetectSizeOpt,
    threads: int = typer.Option(1, min=1, help="CPU threads for the network"),
    flip: Optional[bool] = FlipOpt,
    refine: Optional[int] = RefineOpt,
):
    """Follow every face through a video: detect, then crop each face from its previous
    landmarks (re-detecting every N frames), with a stable track id per face and One
    Euro smoothing against jitter (benchmarks/tracking.md)."""
    import cv2

    from facepoints.data.outputs import guard_output, replace_from, temp_beside
    from facepoints.data.video import open_video_writer
    from facepoints.inference.tracking import Tracker, VideoError, draw_tracks, read_video
    from facepoints.inference.predictor import ImageResult
    from facepoints.models.info import ModelFileError

    try:
        fps, frames = read_video(video)
        predictor = facepoints.load(model, detector=detector, threads=threads, flip=flip,
                                        detect_size=detect_size, refine=refine)
        predictor.detector  # an unknown or uninstalled detector fails here, not mid-video
        tracker = Tracker(predictor, fps=fps, detect_every=detect_every, smooth=smooth,
                          min_cutoff=min_cutoff, beta=beta)
    except VideoError as e:
        fail(str(e), code=1)
    except (ModelFileError, ValueError, ImportError) as e:
        fail(str(e))
    writer, per_frame, shape = None, [], None
    if out:  # the video is written beside the target and moved onto it at the end
        guard_output(out, inputs=[video])
        tmp_video = temp_beside(out)
    try:
        for k, frame in enumerate(frames):
            faces = tracker.update(frame)
            shape = frame.shape
            per_frame.append({"frame": k, **ImageResult(frame.shape[1], frame.shape[0], predictor.scheme.name,
                                                        faces).to_dict()})
            if out:
                if writer is None:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    writer, codec = open_video_writer(tmp_video, fps, (frame.shape[1], frame.shape[0]))
                    if writer is None:
                        fail(f"{out}: cannot write a video there (no OpenCV encoder accepted it)")
                    if codec == "mp4v":
                        typer.echo(f"note: {out}: this OpenCV has no H.264 encoder, so the MP4 is MPEG-4 Part 2 "
                                   "(mp4v), which browsers do not play; --out NAME.webm writes VP9, which they do",
                                   err=True)
                drawn = draw_tracks(frame, faces, predictor.scheme)
                writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    except BaseException:
        if out:
            tmp_video.unlink(missing_ok=True)
        raise
    finally:
        if writer is not None:
            writer.release()
    if writer is not None:
        replace_from(tmp_video, out, inputs=[video])
    if as_json:
        typer.echo(json.dumps({"video": str(video), "fps": fps, "frames": len(per_frame), "width": shape[1],
                               "height": shape[0], "scheme": predictor.scheme.name,
                               "tracks": tracker.tracks_started, "detector_calls": tracker.detector_calls,
                               "per_frame": per_frame}))
    else:
        typer.echo(f"{video}: {len(per_frame)} frames at {fps:g} fps, {tracker.tracks_started} face track(s), "
                   f"{tracker.detector_calls} detector call(s)")
        if out:
            typer.echo(f"wrote {out}")


if __name__ == "__main__":
    app()
