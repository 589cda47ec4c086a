"""Review a dataset by hand in the browser: ``facepoints review FORMAT:PATH``.

A small local web server (standard library ``http.server``, bound to 127.0.0.1 only)
serves one page, ``review_page.html``, that walks a person through the samples, flagged
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
"""

from __future__ import annotations

import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import numpy as np

from facepoints.data.corrections import load_corrections, save_corrections, sidecar_path
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
    data = json.loads(Path(path).read_text())
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
            w, h = (int(np.ceil(v)) + 1 for v in s.landmarks.max(0).clip(1))
        with self.lock:
            c = self.corrections.get(s.id, {})
        pts = c["landmarks"] if c.get("status") == "fixed" else s.landmarks.tolist()
        return {"index": k, "id": s.id, "image": str(s.image), "width": w, "height": h,
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

    def update(self, k: int, action: str, landmarks=None) -> dict:
        """Apply one decision and write the sidecar at once."""
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
                if np.abs(pts - s.landmarks).max() > MOVE_TOLERANCE:
                    entry = {"status": "fixed", "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in pts]}
        elif action == "reset":
            entry = None
        else:
            raise ValueError(f"unknown action {action!r}: accept, drop or reset")
        with self.lock:
            if entry is None:
                self.corrections.pop(s.id, None)
            else:
                self.corrections[s.id] = entry
            save_corrections(self.sidecar, self.corrections, self.spec)
            counts = self.counts()
        return {"sample": self.sample(k), "counts": counts}


def page() -> bytes:
    return resources.files("facepoints.curation").joinpath("review_page.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server_version = "facepoints-review"
    state: ReviewState  # set on the subclass made by make_server

    def log_message(self, fmt, *args):  # quiet: the terminal shows the URL, not every request
        pass

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj, code: int = 200) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json")

    def _error(self, code: int, msg: str) -> None:
        self._json({"error": msg}, code)

    def _host_ok(self) -> bool:
        # A page on another site cannot reach us by a DNS name that resolves to 127.0.0.1.
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        return host in ("127.0.0.1", "localhost")

    def do_GET(self):
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "bad Host header")
        path = self.path.split("?", 1)[0]
        try:
            if path in ("/", "/index.html"):
                return self._send(200, page(), "text/html; charset=utf-8")
            if path == "/api/dataset":
                return self._json(self.state.summary())
            m = re.fullmatch(r"/api/(sample|image)/(\d+)", path)
            if m:
                k = int(m.group(2))
                if m.group(1) == "sample":
                    return self._json(self.state.sample(k))
                return self._send(200, self.state.image(k), "image/jpeg")
        except KeyError:
            return self._error(HTTPStatus.NOT_FOUND, "no such sample")
        except ValueError as e:  # ImageError included
            return self._error(HTTPStatus.NOT_FOUND, str(e))
        self._error(HTTPStatus.NOT_FOUND, "not found")

    def do_POST(self):
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "bad Host header")
        # JSON only: a cross-site form cannot send it without a preflight we never answer.
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        m = re.fullmatch(r"/api/sample/(\d+)", self.path)
        if not m:
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if not 0 < n <= MAX_BODY:
            return self._error(HTTPStatus.BAD_REQUEST, "a JSON body is needed")
        try:
            body = json.loads(self.rfile.read(n))
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            return self._json(self.state.update(int(m.group(1)), str(body.get("action")), body.get("landmarks")))
        except KeyError:
            return self._error(HTTPStatus.NOT_FOUND, "no such sample")
        except ValueError as e:
            return self._error(HTTPStatus.BAD_REQUEST, str(e))


def make_server(state: ReviewState, port: int = 0) -> ThreadingHTTPServer:
    """A server bound to 127.0.0.1:``port`` (0: a free port; see ``server_address``).
    Call ``serve_forever()`` on it (in a thread, for tests) and ``shutdown()`` to stop."""
    handler = type("ReviewHandler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer((HOST, port), handler)
    server.daemon_threads = True
    return server
