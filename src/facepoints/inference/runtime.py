"""The inference backend: ONNX Runtime, no PyTorch.

A backend is a callable ``run(batch) -> landmarks``: ``batch`` is a float32 array
``(B, 3, S, S)``, RGB in [0, 1] (the network normalises itself); the result is a
float32 array ``(B, P, 2)`` in crop units. :class:`~facepoints.inference.predictor.Predictor`
holds one. The bundled models ship as ONNX files inside the package, so running them
imports neither torch nor torchvision; ``facepoints.load()`` picks the backend
(a ``.safetensors`` file goes through :mod:`facepoints.deploy.runners`, which exports it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facepoints.models.info import BUNDLED_ONNX, ModelFileError, ModelInfo, bundled_name, parse_info

ONNX_META_KEY = "facepoints"
ONNX_SUFFIXES = (".onnx",)
# the boolean input of exports with trust outputs (true by default): false skips the
# trust modules, which ONNX Runtime would otherwise run whatever outputs are asked for
TRUST_GATE = "trust_wanted"


class OnnxRunner:
    """An ONNX file run by ONNX Runtime on the CPU.

    ``threads``: intra-op threads (1 by default: a server runs several requests side
    by side, and one thread each is the most throughput per core).
    ``session_options``: an ``onnxruntime.SessionOptions`` to use instead of ours.
    ``memory_arena``: ONNX Runtime's CPU memory arena (on: fastest; off: the memory of a
    large batch is returned after the call, what the service runs with).
    """

    def __init__(self, path: str | Path, threads: int | None = 1, providers: list | None = None,
                 session_options=None, memory_arena: bool = True):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such model file")
        opts = session_options
        if opts is None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(threads or 1)
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            # the arena keeps the largest batch's memory for good: faster for batch jobs, but a
            # service should give it back after a request with many faces (serve turns it off)
            opts.enable_cpu_mem_arena = bool(memory_arena)
            # no busy-waiting between operators: on a machine busy with other work, spinning
            # threads made --threads 2 twelve times slower than one thread
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelFileError(f"{self.path}: not a readable ONNX model ({e.__class__.__name__}: {str(e)[:300]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(f"{self.path}: expected one input, the model has {len(inputs)}")
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_name = self.output_names[0]
        # a second output "trust" (B, P, 2): per landmark the error scale (crop units) and
        # the visibility probability, from a model trained with a trust branch
        self.has_trust = "trust" in self.output_names
        gated = TRUST_GATE in {i.name for i in self.session.get_overridable_initializers()}
        self._landmarks_only = {TRUST_GATE: np.array(False)} if gated else {}

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def info(self) -> ModelInfo:
        """The metadata, validated as a ``.safetensors`` file's is, and checked against the
        graph: its input must be (B, 3, input_size, input_size) and its landmarks (B, P, 2)
        for the scheme's P points."""
        meta = self.metadata
        if ONNX_META_KEY not in meta:
            raise ModelFileError(f"{self.path}: an ONNX file without facepoints metadata (a foreign model?)")
        info = parse_info(meta[ONNX_META_KEY], self.path)
        want_in = [3, info.input_size, info.input_size]
        got_in = list(self.session.get_inputs()[0].shape)[1:]
        got_out = list(self.session.get_outputs()[0].shape)[1:]
        if got_in != want_in or (got_out and got_out != [info.landmark_scheme.num_points, 2]):
            raise ModelFileError(f"{self.path}: damaged facepoints metadata (it says {info.input_size} px and "
                                 f"{info.landmark_scheme.num_points} points; the graph takes {got_in} and gives {got_out})")
        return info

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Landmarks alone (a file with a trust gate skips its trust modules)."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x, **self._landmarks_only})[0]

    def run_trust(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(landmarks, trust or None) in one pass."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if not self.has_trust:
            return self.session.run([self.output_name], {self.input_name: x})[0], None
        landmarks, trust = self.session.run([self.output_name, "trust"], {self.input_name: x})
        return landmarks, trust


class OpenVinoRunner:
    """An ONNX file compiled by OpenVINO for the CPU (an optional runtime: ``pip install
    'facepoints[openvino]'``; ``facepoints.load(model, runtime="openvino")``, ``predict
    --runtime openvino``). Same file, same outputs as :class:`OnnxRunner`: its metadata
    is read and checked by ONNX Runtime once, then OpenVINO runs the graph (one thread by
    default, latency mode) at OpenVINO's own inference precision for the CPU: bf16 where
    the CPU has AMX or AVX-512 BF16 (landmarks within a fraction of a pixel of fp32's, same
    NME), fp32 elsewhere. benchmarks/precision.md compares them."""

    def __init__(self, path: str | Path, threads: int | None = 1):
        try:
            import openvino as ov
        except ImportError:
            from facepoints.errors import MissingDependency

            raise MissingDependency("runtime openvino needs OpenVINO: pip install 'facepoints[openvino]'") from None
        checked = OnnxRunner(path)  # the metadata and graph checks, then let go of that session
        self.path, self._info, self.output_names = checked.path, checked.info(), checked.output_names
        self.has_trust = checked.has_trust
        del checked
        compiled = ov.Core().compile_model(str(self.path), "CPU", {"INFERENCE_NUM_THREADS": int(threads or 1),
                                                                    "PERFORMANCE_HINT": "LATENCY"})
        self.request = compiled.create_infer_request()
        self._outputs = {name: compiled.output(name) for name in self.output_names}

    def info(self) -> ModelInfo:
        return self._info

    def _infer(self, batch):
        return self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._infer(batch)[self._outputs[self.output_names[0]]])

    def run_trust(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        res = self._infer(batch)
        landmarks = np.asarray(res[self._outputs[self.output_names[0]]])
        return landmarks, (np.asarray(res[self._outputs["trust"]]) if self.has_trust else None)


def is_onnx(path: str | Path | None) -> bool:
    return path is not None and Path(path).suffix.lower() in ONNX_SUFFIXES


def onnx_file(model: str | Path | None) -> Path | None:
    """The ONNX file inference runs for a model argument without PyTorch: the packaged
    export of a bundled model (None, "default", "fast"), or an ``.onnx`` path; None for
    anything else (a ``.safetensors`` file needs the export layer first)."""
    name = bundled_name(model)
    if name is not None:
        if not BUNDLED_ONNX[name].is_file():
            raise ModelFileError(f"{BUNDLED_ONNX[name]}: the bundled {name} model's ONNX file is missing; "
                                 "rebuild it with: python -m facepoints.deploy.bundle")
        return BUNDLED_ONNX[name]
    return Path(model) if is_onnx(model) else None
