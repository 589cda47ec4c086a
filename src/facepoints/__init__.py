"""facepoints: facial landmark detection, from annotated photos to a deployed model.

    import facepoints
    predictor = facepoints.load()           # the bundled model (ONNX Runtime, no PyTorch)
    faces = predictor.predict(image_rgb)    # [Face(box, score, landmarks), ...]
"""

import os

from facepoints.version import __version__

# Albumentations checks PyPI for a newer version on import; we run offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def load(model=None, detector: str | object | None = "auto", device: str = "cpu", runtime: str = "auto",
         threads: int | None = None, memory_arena: bool = True, **kw):
    """A ready ``Predictor``: the bundled default model unless ``model`` is given (a model
    file, or a bundled model by name: "default", "fast"). Bundled models and ``.onnx``
    files run on ONNX Runtime without importing PyTorch (``threads``: the network's and
    the face detector's threads, 1 by default); a ``.safetensors`` file needs the training install (PyTorch): it is
    exported once and cached (``runtime="auto"``), or kept in PyTorch (``runtime="torch"``,
    or ``device="cuda"``); ``runtime="openvino"`` runs the ONNX file on OpenVINO (optional
    extra). Other keywords go to :class:`~facepoints.inference.predictor.Predictor`
    (``refine``, ``flip``, ``detect_size``, ``max_faces``). ``memory_arena=False`` returns a
    large batch's memory after each call (the service's setting). ``detector``: a name, a detector object, None
    (boxes given to ``predict``), or "auto": the one the model file recommends, else YuNet."""
    from pathlib import Path

    from facepoints.inference.predictor import Predictor
    from facepoints.inference.runtime import OnnxRunner, OpenVinoRunner, onnx_file
    from facepoints.models.info import BUNDLED_MODELS, ModelFileError, bundled_name

    if runtime not in ("auto", "onnx", "openvino", "torch"):
        from facepoints.errors import UsageError

        raise UsageError(f"runtime {runtime!r}: choose auto, onnx, openvino or torch")

    if model is not None and bundled_name(model) is None and not Path(model).exists():
        raise ModelFileError(f"{model}: no such model file, and not a bundled model (bundled: "
                             f"{', '.join(BUNDLED_MODELS)})")
    path = onnx_file(model) if runtime in ("auto", "onnx", "openvino") and device == "cpu" else None
    if runtime == "openvino" and path is None:
        from facepoints.errors import UsageError

        raise UsageError(f"{model}: runtime openvino runs an ONNX file or a bundled model (export a .safetensors "
                         "file with facepoints export first)")
    if path is not None:
        run = (OpenVinoRunner(path, threads=threads or 1) if runtime == "openvino" else
               OnnxRunner(path, threads=threads or 1, memory_arena=memory_arena))
        info = run.info()
    else:
        from facepoints.models.info import ModelFileError

        try:
            from facepoints.deploy.runners import load_runner
        except ImportError as e:  # the inference-only install has no torch
            raise ModelFileError(f"{model}: running a .safetensors model needs PyTorch (pip install 'facepoints[train]'), "
                               f"or an exported .onnx file ({e})") from None
        run, info = load_runner(model, device=device, threads=threads, runtime=runtime,
                                **({} if memory_arena else {"memory_arena": False}))
    return Predictor(run, info, detector=detector, detector_threads=threads, **kw)


def predict_many(inputs, model=None, *, workers: int | None = None, engine: str = "local",
                 ray_address: str | None = None, sink=None, **options):
    """Every face of many images, as ``predict --jsonl`` computes them: ``inputs`` are
    files, folders, glob patterns or ``@manifest`` files (one, or a list); ``workers``
    processes (default: the cores) or, with ``engine="ray"``, Ray actors (a local Ray
    instance, or ``ray_address``). Returns one record per image in input order (the dict
    :meth:`ImageResult.to_dict` makes, with ``image``; ``{"image", "error"}`` for an image
    that could not be read); given ``sink`` (a callable), hands each record to it as it
    comes instead (bounded memory) and returns the :class:`~facepoints.inference.batch.BatchReport`.
    ``options``: as :func:`load` takes them (``detector``, ``flip``, ``refine``, ``detect_size``)."""
    from facepoints.inference import batch

    files, _ = batch.expand_inputs([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs))
    records: list = []
    opts = {"model": None if model is None else str(model), **options}
    n = max(1, min(workers or batch.default_workers(), len(files) or 1))
    report = batch.run_batch(files, opts, sink or records.append, workers=n, factory=load, engine=engine,
                             ray_address=ray_address)
    return report if sink is not None else records


# The public surface, imported on first use (``import facepoints`` stays light and never
# imports PyTorch; ``facepoints.train`` needs the training install).
_PUBLIC = {
    "Predictor": "facepoints.inference.predictor", "Face": "facepoints.inference.predictor",
    "ImageResult": "facepoints.inference.predictor", "Tracker": "facepoints.inference.tracking",
    "read_dataset": "facepoints.data.formats", "write_dataset": "facepoints.data.formats",
    "evaluate": "facepoints.evaluation.evaluate", "head_pose": "facepoints.data.pose",
    "FacepointsError": "facepoints.errors", "UsageError": "facepoints.errors", "OutputError": "facepoints.errors",
    "TooLargeError": "facepoints.errors", "TrainingError": "facepoints.errors", "MissingDependency": "facepoints.errors",
    "ImageError": "facepoints.data.images", "AnnotationError": "facepoints.data.samples",
    "ModelFileError": "facepoints.models.info", "ConfigError": "facepoints.training.config",
}


def train(config, resume: bool = False, overrides: dict | None = None, progress: bool = False):
    """Train from a config file (YAML path) or a ``TrainConfig``; returns the best model
    file's path. Needs the training install (PyTorch)."""
    from facepoints.training.config import TrainConfig, load_config
    from facepoints.training.loop import train as run

    cfg = config if isinstance(config, TrainConfig) else load_config(config, overrides)
    return run(cfg, resume=resume, progress=progress)


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'facepoints' has no attribute {name!r}")


__all__ = ["load", "predict_many", "train", "__version__", *_PUBLIC]
