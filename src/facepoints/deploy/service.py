"""An HTTP service for landmarks: upload a photo, get every face and its landmarks.

    facepoints serve --model model.onnx --port 8000
    curl -F image=@photo.jpg http://127.0.0.1:8000/v1/landmarks

``POST /v1/landmarks`` (multipart form, file field ``image``) answers
``{"width", "height", "scheme", "faces": [{"box", "score", "landmarks"}]}`` in pixels of
the image as the user sees it (EXIF orientation applied). ``GET /healthz`` says the
service is up; the OpenAPI schema is at ``/openapi.json`` (no ``/docs`` page: FastAPI's
loads its assets from a CDN, and nothing the project serves refers to an external URL).

What a service must survive is refused early and with a reason:

* a body over ``max_upload_bytes``: 413, from the ``Content-Length`` header before the
  body is read, and while reading when the header is missing or lies;
* an empty, truncated or non-image upload: 400 with ``detail`` saying which;
* an image declaring more than ``max_pixels`` pixels (a decompression bomb): 413,
  from its header, before it is decoded;
* a missing ``image`` field: 422 (FastAPI's validation error); an image the detector
  cannot work on (1 x 1, 30000 x 1 pixels): 422 with the reason.

At most ``max_concurrency`` images are decoded and run at a time (the rest wait, up
to ``max_queue`` of them; beyond that 503 with ``Retry-After``), so memory and CPU use
are bounded whatever the load. :func:`run_server` (what ``facepoints serve`` runs) also
bounds the connections (``max_connections``; 503 beyond) and the time a client may take
to send its whole request, headers and body (``request_timeout``, 20 s: a client that
trickles a byte a second is dropped, the others are served meanwhile), and shuts down
within ``graceful_timeout`` seconds of SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import io
import json
import warnings

import anyio.to_thread
from fastapi import FastAPI, File, HTTPException, Request, Response, UploadFile
from pydantic import BaseModel, Field

from facepoints.data.images import read_image
from facepoints.errors import FacepointsError
from facepoints.inference.predictor import ImageResult

REQUEST_TIMEOUT = 20.0  # seconds a client may take to send a whole request
MAX_CONNECTIONS = 128
GRACEFUL_TIMEOUT = 10.0
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 25_000_000
# room for the multipart envelope (boundaries, part headers) around the file itself
MULTIPART_SLACK = 64 * 1024


class Pose(BaseModel):
    yaw: float = Field(description="degrees; > 0: the subject turns to their left (the image's right)")
    pitch: float = Field(description="degrees; > 0: looks up")
    roll: float = Field(description="degrees; > 0: tilts clockwise in the image")


class Face(BaseModel):
    box: list[float] = Field(description="face detector box x0, y0, x1, y1 in image pixels")
    score: float | None = Field(description="detector confidence, 0..1")
    landmarks: list[list[float]] = Field(description="(P, 2) landmark x, y in image pixels, in the scheme's order")
    error_radius: list[float] | None = Field(None, description="per landmark: the radius in pixels that holds the "
                                             "true point 90 % of the time (models with trust outputs)")
    visible: list[float] | None = Field(None, description="per landmark: probability that it is in view")
    quality: float | None = Field(None, description="0-1, higher for faces the model is surer of")
    pose: Pose | None = Field(None, description="head pose from the landmarks (68-point models)")


class LandmarksResponse(BaseModel):
    width: int
    height: int
    scheme: str = Field(description="landmark scheme name, e.g. ibug68")
    faces: list[Face]


class Health(BaseModel):
    status: str
    scheme: str
    points: int
    model_version: str


class Problem(BaseModel):
    detail: str


class _BodyLimit:
    """ASGI middleware: 413 for request bodies over ``limit`` bytes, judged from
    ``Content-Length`` before anything is read, and counted while reading."""

    def __init__(self, app, limit: int, shown: int | None = None):
        self.app = app
        self.limit = limit
        self.shown = shown or limit  # the limit users are told (the file's, without the multipart envelope)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                return await _send_json(send, 400, {"detail": "invalid Content-Length header"})
            if n > self.limit:
                return await _send_json(send, 413, {"detail": _too_large(n, self.shown)})
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # inside a route this becomes the 413 response
                    raise HTTPException(413, _too_large(None, self.shown))
            return message

        await self.app(scope, counted, send)


def _too_large(n: int | None, limit: int) -> str:
    size = f"of {n:,} bytes " if n is not None else ""
    return f"upload {size}is over the limit of {limit:,} bytes"


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def _declared_pixels(data: bytes) -> int | None:
    """Pixel count from the image header, without decoding; None if PIL cannot tell
    (``read_image`` then says what is wrong)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                return w * h
    except Image.DecompressionBombError:
        return 1 << 62
    except Exception:
        return None


def create_app(predictor, max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
               max_concurrency: int = 2, max_queue: int = 64) -> FastAPI:
    """A FastAPI app serving ``predictor`` (a :class:`~facepoints.inference.predictor.Predictor`)."""
    from facepoints.version import __version__

    for name, value in (("max_concurrency", max_concurrency), ("max_queue", max_queue),
                        ("max_upload_bytes", max_upload_bytes), ("max_pixels", max_pixels)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if getattr(predictor, "_detector_spec", None) is not None:
        predictor.detector  # build it now, not racing in the first concurrent requests
    scheme = predictor.scheme
    # no /docs or /redoc: FastAPI's pages load their scripts and fonts from a CDN (blank
    # offline, third-party code online); the schema itself is at /openapi.json
    app = FastAPI(title="facepoints", version=__version__, docs_url=None, redoc_url=None,
                  description="Facial landmarks: every face in an uploaded photo and its "
                              f"{scheme.num_points} {scheme.name} landmarks.")
    app.add_middleware(_BodyLimit, limit=max_upload_bytes + MULTIPART_SLACK, shown=max_upload_bytes)
    slots = asyncio.Semaphore(max_concurrency)
    waiting = 0

    def infer(data: bytes, name: str) -> dict:
        try:
            img = read_image(data, max_pixels=max_pixels, name=name)
            faces = predictor.predict(img)
            return ImageResult(img.shape[1], img.shape[0], scheme.name, faces).to_dict()
        finally:
            release_memory()

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        return Health(status="ok", scheme=scheme.name, points=scheme.num_points,
                      model_version=str(predictor.info.version))

    @app.post("/v1/landmarks", response_model=LandmarksResponse, response_model_exclude_none=True,
              responses={400: {"model": Problem, "description": "empty, truncated or not an image"},
                         413: {"model": Problem, "description": "upload or image (pixels) over the limit"},
                         503: {"model": Problem, "description": "too many requests waiting"}})
    async def landmarks(request: Request,
                        image: UploadFile = File(..., description="a photo: JPEG, PNG, WebP, BMP, TIFF, ...")):
        nonlocal waiting
        name = (image.filename or "upload")[:120]
        data = await image.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"{name}: {_too_large(None, max_upload_bytes)}")
        if not data:
            raise HTTPException(400, f"{name}: empty upload (0 bytes)")
        pixels = _declared_pixels(data)
        if pixels is not None and pixels > max_pixels:
            raise HTTPException(413, f"{name}: image of more than {max_pixels:,} pixels (possible decompression bomb)")
        if waiting >= max_queue:
            raise HTTPException(503, "busy: too many requests waiting; retry later", headers={"Retry-After": "1"})
        waiting += 1
        try:
            await slots.acquire()
        finally:
            waiting -= 1
        try:
            if await request.is_disconnected():  # the client hung up while waiting: no work for nobody
                return Response(status_code=499)
            return await anyio.to_thread.run_sync(infer, data, name)
        except FacepointsError as e:  # each error type carries its status (image 400, too large 413, ...)
            raise HTTPException(e.http_status, str(e)) from None
        except ValueError as e:  # decodable, but no use to the detector (1 x 1, 30000 x 1, ...)
            raise HTTPException(422, f"{name}: {e}") from None
        finally:
            slots.release()

    return app


def release_memory() -> None:
    """Give freed heap back to the system after a request (glibc keeps it otherwise, so
    one large image would hold the service's memory for good); a no-op elsewhere."""
    import ctypes
    import ctypes.util

    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
        except OSError:
            _libc = False
    if _libc and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


_libc = None


def deadline_protocol(request_timeout: float = REQUEST_TIMEOUT):
    """uvicorn's h11 protocol with a deadline: a connection whose request (headers and
    body) has not fully arrived ``request_timeout`` seconds after the connection (or the
    previous response) is closed. uvicorn itself only times out idle keep-alive
    connections, so a slow-loris client could hold a connection for ever."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DeadlineH11(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc) -> None:
            if getattr(self, "_deadline", None) is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if getattr(self, "_deadline", None) is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(request_timeout, self._too_slow)

        def _too_slow(self) -> None:
            if self.conn.their_state is not h11.DONE and not self.transport.is_closing():
                self.logger.warning("dropped a client that took over %.0f s to send its request", request_timeout)
                self.transport.close()

    return DeadlineH11


def server_config(app, host: str = "127.0.0.1", port: int = 8000, request_timeout: float = REQUEST_TIMEOUT,
                  max_connections: int = MAX_CONNECTIONS, graceful_timeout: float = GRACEFUL_TIMEOUT,
                  log_level: str = "info"):
    """The uvicorn configuration ``facepoints serve`` runs with (see the module docstring)."""
    import uvicorn

    for name, value in (("request_timeout", request_timeout), ("max_connections", max_connections),
                        ("graceful_timeout", graceful_timeout)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    return uvicorn.Config(app, host=host, port=port, http=deadline_protocol(request_timeout),
                          limit_concurrency=int(max_connections), timeout_keep_alive=5,
                          timeout_graceful_shutdown=graceful_timeout, log_level=log_level)


def run_server(app, host: str = "127.0.0.1", port: int = 8000, **kw) -> None:
    """Serve ``app`` until SIGTERM or Ctrl-C (:func:`server_config`). The socket is bound
    here first, so a busy port is an ``OSError`` naming it, not a log line."""
    import socket

    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    try:
        uvicorn.Server(server_config(app, host, port, **kw)).run(sockets=[sock])
    finally:
        sock.close()
