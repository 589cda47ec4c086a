"""The cluster engine: the same batch job on Ray Data (``predict --engine ray``).

The images become a Ray dataset of paths; an actor pool maps the predictor over it in
batches, one actor per CPU it is given, each actor loading the model once (one
single-threaded ONNX Runtime session, exactly as a ``--workers`` process does, through the
same per-image function, so the records are the same). Images are read by the actors,
so on a multi-node cluster every node must see the paths (a shared filesystem) and have
facepoints installed. Records come back in input order to the caller's ``sink`` (the
``--jsonl`` writer, so resuming works as with local workers).

Ray is an optional extra (``pip install 'facepoints[ray]'``). With no address, a local
Ray instance is started for the job and stopped after it (or the cluster named by the
``RAY_ADDRESS`` environment variable is used, as ``ray.init`` does); ``address="auto"``
joins the cluster this machine belongs to.
"""

from __future__ import annotations

import json


def _ray():
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        from facepoints.errors import MissingDependency

        raise MissingDependency("--engine ray needs Ray Data: pip install 'facepoints[ray]'") from None
    return ray


class _Landmarker:
    """One Ray actor: ``init(factory, options)`` makes its predictor once, then batches of
    paths -> JSON lines by ``one((path, targets))`` (the batch layer's per-worker
    functions, passed in: the same code as a worker process runs), as the columns of
    :class:`facepoints.inference.batch.Line`."""

    def __init__(self, init, one, factory, options: dict):
        init(factory, options)
        self.one = one

    def __call__(self, rows: dict) -> dict:
        lines = [self.one((str(p), json.loads(t) if t else None)) for p, t in zip(rows["path"], rows["targets"])]
        return {"text": [x.text for x in lines], "image": [x.image for x in lines],
                "error": [x.error or "" for x in lines], "faces": [x.faces for x in lines]}


def ray_records(items: list[tuple[str, list | None]], options: dict, factory, init, one,
                workers: int | None = None, address: str | None = None, batch_size: int = 8):
    """The fields of :class:`facepoints.inference.batch.Line` (text, image, error, faces)
    as ``one`` makes them (:func:`facepoints.inference.batch._one_line`: the JSON made in
    the actors, not parsed here), for ``items`` (``(path, targets)``), in input order, computed by ``workers`` Ray actors
    (default: the CPUs Ray has), each set up by ``init(factory, options)``. Starts Ray
    when it is not running (``address``: as ``ray.init`` takes it) and stops what it started."""
    import logging

    ray = _ray()
    if not items:
        return
    for name in ("ray", "ray.data"):  # the job's own lines only (Ray's plan and progress notes are INFO/WARNING)
        logging.getLogger(name).setLevel(logging.ERROR)
    started = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        ray.init(address=address, **kwargs)
        started = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        ds = ray.data.from_items([{"path": p, "targets": json.dumps([str(x) for x in t]) if t else ""} for p, t in items])
        ds = ds.map_batches(_Landmarker, fn_constructor_args=(init, one, factory, options), batch_size=batch_size,
                            concurrency=max(1, min(workers, len(items))), num_cpus=1, batch_format="numpy")
        for row in ds.iter_rows():
            yield str(row["text"]), str(row["image"]), str(row["error"]) or None, int(row["faces"])
    finally:
        if started:
            ray.shutdown()
