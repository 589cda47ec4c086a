"""Review a dataset by hand in the browser: ``facepoints review FORMAT:PATH``.

A small local web server (FastAPI on uvicorn, the service's stack; bound to 127.0.0.1
only) serves one page, ``review_page.html``, that walks a person through the samples, flagged
ones first when a ``facepoints clean`` report is given. Each sample is shown with its
landmarks as SVG circles over the image; dragging a circle moves the point. Accept
(keeps the moved points, if any), Drop, Next and Previous. Every decision is written
at once to the sidecar ``PATH.corrections.json`` (see ``facepoints.data.corrections``);
the annotation files are never changed. ``read_dataset`` applies the sidecar.

The API the page uses (all JSON except the image):

    GET  /api/dataset        samples in review order, colours, counts
    GET  /api/sample/K       the K-th sample in review order: id, size, landmarks, status
    GET  /api/image/K        its image as JPEG, EXIF orientation applied (as landmarks are)
    POST /api/sample/K       {"action": "accept", "landmarks": [[x, y], ...]} | {"action": "drop"}
                             | {"action": "reset"}

Guards: only a loopback ``Host`` name (a page on another site cannot reach us through a
DNS name that resolves to 127.0.0.1); writes only as ``application/json`` (a cross-site
form cannot send it) and only with the session's token (``X-Review-Token``; it is in the
URL the command prints, so other local programs cannot write); fixes only with the
scheme's number of finite points near the image. Two sessions on one dataset merge
per sample: every write re-reads the sidecar under a file lock and changes only its
own sample.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import secrets
import socket
import threading
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from facepoints.data.corrections import FIX_MARGIN, load_corrections, save_corrections, sidecar_path
from facepoints.data.formats import parse_spec, read_dataset
from facepoints.data.samples import Sample

HOST = "127.0.0.1"
MAX_BODY = 4 * 1024 * 1024
# Points moved by less than this (pixels) count as not moved: an accept without a drag
# stays "accepted" even after the page's rounding.
MOVE_TOLERANCE = 0.02


def read_report(path: str | Path | None) -> list[dict]:
    """The flagged entries of a ``facepoints clean`` report, in its order."""
    if not path:
        return []
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--report {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--report {path}: not a clean report (not JSON: {e.msg} at line {e.lineno}); "
                         "give the report.json that `facepoints clean --out DIR` writes") from None
    flagged = data.get("flagged") if isinstance(data, dict) else None
    if not isinstance(flagged, list):
        raise ValueError(f"{path}: not a clean report (expected {{\"flagged\": [{{\"id\", \"score\", \"reasons\"}}]}})")
    return [f for f in flagged if isinstance(f, dict) and "id" in f]


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


class ReviewState:
    """The dataset as annotated (corrections not applied), the review order, and the
    corrections so far. Thread-safe: the server answers requests in threads."""

    def __init__(self, spec: str, report: str | Path | None = None, scheme=None, skip_missing: bool = False):
        from facepoints.data.draw import side_colours

        self.spec = spec
        _, path = parse_spec(spec)
        self.ds = read_dataset(spec, scheme, skip_missing=skip_missing, corrections=False)
        self.sidecar = sidecar_path(path)
        self.corrections: dict[str, dict] = dict(load_corrections(self.sidecar))
        by_id = {s.id: i for i, s in enumerate(self.ds.samples)}
        self.flags: dict[str, dict] = {}
        self.unknown_flagged: list[str] = []
        order: list[int] = []
        for f in read_report(report):
            sid = str(f["id"])
            if sid in by_id and sid not in self.flags:
                self.flags[sid] = {"score": f.get("score"), "reasons": [str(r) for r in f.get("reasons") or []]}
                order.append(by_id[sid])
            elif sid not in by_id:
                self.unknown_flagged.append(sid)
        flagged = set(order)
        order += [i for i in range(len(self.ds.samples)) if i not in flagged]
        self.order = order
        self.colours = [_hex(c) for c in side_colours(self.ds.scheme, self.ds.scheme.num_points)]
        self.lock = threading.Lock()
        self._images: dict[int, bytes] = {}

    def _sample(self, k: int) -> Sample:
        if not 0 <= k < len(self.order):
            raise KeyError(k)
        return self.ds.samples[self.order[k]]

    def counts(self) -> dict:
        ids = {s.id for s in self.ds.samples}
        out = {"accepted": 0, "fixed": 0, "dropped": 0}
        for sid, c in self.corrections.items():
            if sid in ids:
                out[c["status"]] += 1
        return out

    def summary(self) -> dict:
        with self.lock:
            return {
                "dataset": self.spec, "sidecar": str(self.sidecar), "n": len(self.order),
                "n_flagged": len(self.flags), "unknown_flagged": len(self.unknown_flagged),
                "scheme": self.ds.scheme.name, "num_points": self.ds.scheme.num_points,
                "colours": self.colours, "counts": self.counts(),
                "items": [{"id": self.ds.samples[i].id, "flagged": self.ds.samples[i].id in self.flags,
                           "status": self.corrections.get(self.ds.samples[i].id, {}).get("status")}
                          for i in self.order],
            }

    def sample(self, k: int) -> dict:
        from facepoints.data.images import ImageError, image_size

        s = self._sample(k)
        image_error = None
        try:
            w, h = image_size(s.image)
        except ImageError as e:
            image_error = str(e)
            w, h = self._size(s)
        with self.lock:
            c = self.corrections.get(s.id, {})
        pts = c["landmarks"] if c.get("status") == "fixed" else s.landmarks.tolist()
        return {"index": k, "id": s.id, "image": str(s.image), "width": w, "height": h, "revision": _revision(c or None),
                "landmarks": [[float(x), float(y)] for x, y in pts],
                "original": [[float(x), float(y)] for x, y in s.landmarks.tolist()],
                "status": c.get("status"), "flag": self.flags.get(s.id), "image_error": image_error}

    def image(self, k: int) -> bytes:
        import cv2

        from facepoints.data.images import read_image

        with self.lock:
            if k in self._images:
                return self._images[k]
        rgb = read_image(self._sample(k).image)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise ValueError("cannot encode the image")
        data = buf.tobytes()
        with self.lock:
            if len(self._images) >= 8:
                self._images.pop(next(iter(self._images)))
            self._images[k] = data
        return data

    def update(self, k: int, action: str, landmarks=None, revision: str | None = None) -> dict:
        """Apply one decision and write the sidecar at once. ``revision``: the sample's
        ``revision`` as the caller loaded it; if another tab or session has decided on the
        sample since, the decision is refused (:class:`StaleDecision`) instead of
        overwriting theirs."""
        s = self._sample(k)
        if action == "drop":
            entry = {"status": "dropped"}
        elif action == "accept":
            entry = {"status": "accepted"}
            if landmarks is not None:
                try:
                    pts = np.asarray(landmarks, dtype=np.float64)
                except (TypeError, ValueError):
                    raise ValueError("landmarks must be [[x, y], ...] numbers") from None
                if pts.shape != s.landmarks.shape or not np.isfinite(pts).all():
                    raise ValueError(f"landmarks must be {len(s.landmarks)} finite [x, y] pairs")
                w, h = self._size(s)
                lo, hi = -FIX_MARGIN * np.array([w, h]), (1 + FIX_MARGIN) * np.array([w, h])
                if ((pts < lo) | (pts > hi)).any():
                    raise ValueError(f"landmarks must lie within the {w}x{h} image (or {FIX_MARGIN:g} of its size "
                                     "beyond its border)")
                if np.abs(pts - s.landmarks).max() > MOVE_TOLERANCE:
                    entry = {"status": "fixed", "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in pts]}
        elif action == "reset":
            entry = None
        else:
            raise ValueError(f"unknown action {action!r}: accept, drop or reset")
        with self.lock, _locked(self.sidecar):
            # another session may have written other samples since: keep theirs
            current = dict(load_corrections(self.sidecar))
            if revision is not None and revision != _revision(current.get(s.id)):
                self.corrections = current
                raise StaleDecision(f"{s.id} was changed in another tab or session since this page loaded it "
                                    "(now: " + str((current.get(s.id) or {}).get("status") or "not reviewed")
                                    + "); reload it to see that decision, then decide again")
            if entry is None:
                current.pop(s.id, None)
            else:
                current[s.id] = entry
            save_corrections(self.sidecar, current, self.spec)
            self.corrections = current
            counts = self.counts()
        return {"sample": self.sample(k), "counts": counts}

    def _size(self, s: Sample) -> tuple[int, int]:
        from facepoints.data.images import ImageError, image_size

        try:
            return image_size(s.image)
        except ImageError:
            return tuple(int(np.ceil(v)) + 1 for v in s.landmarks.max(0).clip(1))


class StaleDecision(ValueError):
    """A decision made on a sample that someone else decided on after it was loaded."""


def _revision(entry: dict | None) -> str:
    """A short fingerprint of a sample's stored decision ("none" when there is none)."""
    import hashlib

    if not entry:
        return "none"
    return hashlib.sha1(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:12]


def page() -> bytes:
    return resources.files("facepoints.curation").joinpath("review_page.html").read_bytes()


@contextlib.contextmanager
def _locked(sidecar: Path):
    """An exclusive lock (``flock``) shared by every review session of this sidecar."""
    lock = sidecar.with_name(f".{sidecar.name}.lock")
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def create_app(state: ReviewState, token: str):
    """The review page and its API as a FastAPI app (the guards are in the module docstring)."""
    app = FastAPI(title="facepoints review", docs_url=None, redoc_url=None, openapi_url=None)

    def error(code: int, msg: str) -> JSONResponse:
        return JSONResponse({"error": msg}, status_code=code, headers={"Cache-Control": "no-store"})

    @app.middleware("http")
    async def guards(request: Request, call_next):
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if host not in ("127.0.0.1", "localhost"):
            return error(403, "bad Host header")
        if request.method == "POST":
            if (request.headers.get("content-type") or "").split(";")[0].strip() != "application/json":
                return error(415, "send application/json")
            if not secrets.compare_digest(request.headers.get("x-review-token", ""), token):
                return error(403, "missing or wrong review token (open the URL the review command printed)")
            try:
                n = int(request.headers.get("content-length") or 0)
            except ValueError:
                n = -1
            if not 0 < n <= MAX_BODY:
                return error(400, "a JSON body is needed")
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.get("/")
    @app.get("/index.html")
    def index():
        return Response(page(), media_type="text/html; charset=utf-8")

    @app.get("/api/dataset")
    def dataset():
        return state.summary()

    @app.get("/api/sample/{k}")
    def sample(k: int):
        try:
            return state.sample(k)
        except KeyError:
            return error(404, "no such sample")

    @app.get("/api/image/{k}")
    def image(k: int):
        try:
            return Response(state.image(k), media_type="image/jpeg")
        except KeyError:
            return error(404, "no such sample")
        except ValueError as e:  # ImageError included
            return error(404, str(e))

    @app.post("/api/sample/{k}")
    async def update(k: int, request: Request):
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            revision = body.get("revision")
            return state.update(k, str(body.get("action")), body.get("landmarks"),
                                None if revision is None else str(revision))
        except KeyError:
            return error(404, "no such sample")
        except StaleDecision as e:
            return error(409, str(e))
        except ValueError as e:  # json.JSONDecodeError included
            return error(400, str(e))

    @app.exception_handler(404)
    async def not_found(request, exc):
        return error(404, "not found")

    return app


class ReviewServer:
    """uvicorn serving :func:`create_app` on 127.0.0.1:``port`` (0: a free port; see
    ``server_address`` and ``url``, which carries the token). ``serve_forever()`` (in a
    thread, for tests), ``shutdown()`` from another thread, ``server_close()``."""

    def __init__(self, state: ReviewState, port: int = 0, token: str | None = None):
        import uvicorn

        self.token = token or secrets.token_urlsafe(16)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((HOST, port))
            self.sock.listen(64)  # connections wait in the queue until uvicorn serves them
        except OSError as e:
            self.sock.close()
            raise OSError(f"cannot listen on {HOST}:{port}: {e.strerror or e}") from None
        self.server_address = self.sock.getsockname()
        self.url = f"http://{self.server_address[0]}:{self.server_address[1]}/?token={self.token}"
        config = uvicorn.Config(create_app(state, self.token), log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self._serving, self._done = threading.Event(), threading.Event()

    def serve_forever(self) -> None:
        self._serving.set()
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self._done.set()

    def shutdown(self) -> None:
        self.server.should_exit = True

    def server_close(self) -> None:
        if self._serving.is_set():
            self.server.should_exit = True
            self._done.wait(10)
        self.sock.close()


def make_server(state: ReviewState, port: int = 0, token: str | None = None) -> ReviewServer:
    return ReviewServer(state, port, token)
