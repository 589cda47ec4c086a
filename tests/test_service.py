"""The HTTP service over real HTTP on loopback: uvicorn in a background thread,
requests with the standard library's http.client."""

import contextlib
import http.client
import io
import json
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from facepoints.cli import app as cli_app
from facepoints.deploy.runners import TorchRunner
from facepoints.inference.predictor import Predictor
from facepoints.deploy.service import create_app
from facepoints.models.network import build_model
from facepoints.models.package import ModelInfo, load_model, save_model
from facepoints.schemes import IBUG68
from conftest import EXAMPLES

uvicorn = pytest.importorskip("uvicorn")

MAX_UPLOAD = 1024 * 1024
MAX_PIXELS = 4_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "small.safetensors"
    save_model(build_model("mobilenet_v3_small", 68).eval(),
               ModelInfo(scheme=IBUG68.to_dict(), backbone="mobilenet_v3_small", head="regression",
                         input_size=64, crop_scale=1.25), path)
    model, info = load_model(path)
    app = create_app(Predictor(TorchRunner(model), info), max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS, max_concurrency=2)
    with running(app) as addr:
        yield addr


@contextlib.contextmanager
def running(app):
    """uvicorn serving ``app`` on a free loopback port, in a background thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=30))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not srv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield ("127.0.0.1", port)
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


def multipart(data: bytes, field: str = "image", filename: str = "photo.jpg") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def request(addr, method, path, body=None, headers=None, conn=None):
    c = conn or http.client.HTTPConnection(*addr, timeout=60)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        raw = r.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw
        return r.status, payload
    finally:
        if conn is None:
            c.close()


def post_image(addr, data: bytes, conn=None, **kw):
    body, ctype = multipart(data, **kw)
    return request(addr, "POST", "/v1/landmarks", body, {"Content-Type": ctype}, conn=conn)


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(img: np.ndarray, quality=90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_real_photo_returns_faces_with_68_landmarks(server):
    data = (EXAMPLES / "two_faces_composite.jpg").read_bytes()
    status, out = post_image(server, data)
    assert status == 200, out
    w, h = Image.open(EXAMPLES / "two_faces_composite.jpg").size
    assert (out["width"], out["height"], out["scheme"]) == (w, h, "ibug68")
    assert len(out["faces"]) == 2
    for f in out["faces"]:
        assert len(f["box"]) == 4 and 0 < f["score"] <= 1
        assert np.array(f["landmarks"]).shape == (68, 2)


def test_healthz_and_openapi(server):
    status, out = request(server, "GET", "/healthz")
    assert status == 200 and out["status"] == "ok" and out["points"] == 68
    status, schema = request(server, "GET", "/openapi.json")
    assert status == 200 and "/v1/landmarks" in schema["paths"]
    post = schema["paths"]["/v1/landmarks"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert {"200", "400", "413", "422"} <= set(post["responses"])


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"hello, this is a text file and not a photo\n" * 10, "not a readable image"),
    ((EXAMPLES / "astronaut.jpg").read_bytes()[:4000], "truncated"),
])
def test_bad_uploads_get_400_with_a_reason(server, data, words):
    status, out = post_image(server, data, filename="upload.bin")
    assert status == 400, out
    assert words in out["detail"] and "upload.bin" in out["detail"]


def test_missing_image_field_is_422(server):
    status, out = post_image(server, (EXAMPLES / "astronaut.jpg").read_bytes(), field="file")
    assert status == 422 and "image" in json.dumps(out["detail"])
    status, out = request(server, "POST", "/v1/landmarks", b"{}", {"Content-Type": "application/json"})
    assert status == 422


def test_oversize_upload_is_413(server):
    big = np.random.default_rng(0).integers(0, 256, MAX_UPLOAD + 100_000, dtype=np.uint8).tobytes()
    status, out = post_image(server, big)
    assert status == 413 and "over the limit" in out["detail"]
    # the connection is still usable afterwards (the rest of the body was discarded)
    conn = http.client.HTTPConnection(*server, timeout=60)
    assert post_image(server, big, conn=conn)[0] == 413
    assert request(server, "GET", "/healthz", conn=conn)[0] == 200
    conn.close()


def test_oversize_is_refused_from_content_length_before_the_body(server):
    """Headers only, claiming 50 MB: the answer comes without a byte of body sent."""
    with socket.create_connection(server, timeout=10) as s:
        s.sendall(b"POST /v1/landmarks HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 50000000\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"over the limit" in reply


def test_oversize_chunked_upload_is_capped_while_reading(server):
    body, ctype = multipart(b"\xff" * (MAX_UPLOAD + 200_000))
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))
    conn = http.client.HTTPConnection(*server, timeout=60)
    conn.request("POST", "/v1/landmarks", body=chunks, headers={"Content-Type": ctype}, encode_chunked=True)
    r = conn.getresponse()
    out = json.loads(r.read())
    conn.close()
    assert r.status == 413 and "over the limit" in out["detail"]


def test_pixel_bomb_is_413_before_decoding(server):
    buf = io.BytesIO()
    Image.new("L", (2500, 2500)).save(buf, "PNG")  # 6.25 MP in a few KB
    assert len(buf.getvalue()) < 100_000
    status, out = post_image(server, buf.getvalue(), filename="bomb.png")
    assert status == 413 and "pixels" in out["detail"]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def test_load_200_requests_at_concurrency_8(server):
    img = np.asarray(Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").resize((256, 256)))
    photo = jpeg(img)
    bad = b"definitely not an image"
    for _ in range(4):  # warm up (allocators, thread pool) before measuring memory
        assert post_image(server, photo)[0] == 200
    rss0 = _rss_mb()
    t0 = time.monotonic()

    def worker(k):
        conn = http.client.HTTPConnection(*server, timeout=120)
        statuses = []
        try:
            for i in range(25):
                data = bad if (k + i) % 10 == 0 else photo
                status, out = post_image(server, data, conn=conn)
                statuses.append(status)
                if status == 200:
                    assert len(out["faces"]) == 1 and len(out["faces"][0]["landmarks"]) == 68
        finally:
            conn.close()
        return statuses

    with ThreadPoolExecutor(8) as ex:
        statuses = [s for part in ex.map(worker, range(8)) for s in part]
    elapsed = time.monotonic() - t0
    growth = _rss_mb() - rss0
    print(f"200 requests at concurrency 8 in {elapsed:.1f} s ({200 / elapsed:.1f}/s), RSS growth {growth:.0f} MB")
    assert len(statuses) == 200
    assert not [s for s in statuses if s >= 500]
    n_bad = sum((k + i) % 10 == 0 for k in range(8) for i in range(25))
    assert statuses.count(400) == n_bad and statuses.count(200) == 200 - n_bad
    assert growth < 300


class GatedPredictor:
    """Stands in for a Predictor: each prediction waits for the gate, and the number
    running at once is recorded."""

    def __init__(self):
        self.scheme, self.info = IBUG68, ModelInfo(scheme=IBUG68.to_dict(), backbone="x", head="regression",
                                                   input_size=64, crop_scale=1.25)
        self.gate, self.now, self.peak, self.lock = threading.Event(), 0, 0, threading.Lock()

    def predict(self, img):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        self.gate.wait(60)
        with self.lock:
            self.now -= 1
        return []


def test_concurrent_inferences_are_bounded_and_the_queue_too():
    photo = jpeg(np.full((32, 32, 3), 128, np.uint8))
    fake = GatedPredictor()
    with running(create_app(fake, max_concurrency=2, max_queue=3)) as addr, ThreadPoolExecutor(8) as ex:
        futures = [ex.submit(post_image, addr, photo) for _ in range(8)]
        try:
            # 2 run, 3 wait; the other 3 are told at once to come back later
            early = []
            for f in as_completed(futures, timeout=60):
                early.append(f.result()[0])
                if len(early) == 3:
                    break
            assert early == [503, 503, 503]
            deadline = time.monotonic() + 30
            while fake.now < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert fake.now == 2
        finally:
            fake.gate.set()
        statuses = [f.result()[0] for f in futures]
    assert fake.peak == 2
    assert statuses.count(200) == 5 and statuses.count(503) == 3


def test_serve_cli_refuses_a_missing_model(tmp_path):
    r = CliRunner().invoke(cli_app, ["serve", "--model", str(tmp_path / "nope.onnx")])
    assert r.exit_code == 2 and "no such model file" in r.output


def test_no_page_refers_to_an_external_url(server):
    """FastAPI's /docs and /redoc load Swagger/ReDoc from a CDN: they are not served."""
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        c = http.client.HTTPConnection(*server, timeout=30)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        assert r.status == 404 and b"cdn" not in body.lower(), path
    c = http.client.HTTPConnection(*server, timeout=30)
    c.request("GET", "/openapi.json")
    text = c.getresponse().read().decode()
    assert "http://" not in text and "https://" not in text


@pytest.mark.parametrize("shape", [(1, 1), (1, 3000), (3000, 1)])
def test_degenerate_images_get_a_4xx_not_a_500(server, shape):
    status, out = post_image(server, png(np.full((*shape, 3), 200, np.uint8)))
    assert status == 422 and "too small" in out["detail"], (status, out)


def test_serve_refuses_a_concurrency_of_zero():
    r = CliRunner().invoke(cli_app, ["serve", "--max-concurrency", "0"])
    assert r.exit_code == 2 and "max-concurrency" in r.output
    with pytest.raises(ValueError, match="max_concurrency"):
        create_app(GatedPredictor(), max_concurrency=0)


def test_a_slow_loris_client_is_dropped_while_others_are_served():
    """Headers, then a byte a second: dropped at the request deadline (20 s by default,
    2 s here); a normal client is answered meanwhile."""
    from facepoints.deploy.service import REQUEST_TIMEOUT, server_config

    assert REQUEST_TIMEOUT <= 30
    app = create_app(GatedPredictor(), max_concurrency=1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(server_config(app, port=port, request_timeout=2.0, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not srv.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(b"POST /v1/landmarks HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        t0, dropped = time.monotonic(), False
        while time.monotonic() - t0 < 15:
            status, out = request(("127.0.0.1", port), "GET", "/healthz")
            assert status == 200  # the others are served
            try:
                slow.sendall(b"x")
                time.sleep(1.0)
                slow.setblocking(False)
                try:
                    if slow.recv(1) == b"":
                        dropped = True
                        break
                except BlockingIOError:
                    pass
                finally:
                    slow.setblocking(True)
            except OSError:  # reset by the server
                dropped = True
                break
        assert dropped and time.monotonic() - t0 < 10, "the slow client was not dropped"
    finally:
        srv.should_exit = True
        thread.join(timeout=15)
        sock.close()


def test_serve_stops_cleanly_on_sigterm(tmp_path):
    import signal
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "facepoints.cli", "serve", "--port", str(port), "--model", "fast"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "no start"
            try:
                if request(("127.0.0.1", port), "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal (the exit status says SIGTERM)
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM) and time.monotonic() - t0 < 15
        assert "Shutting down" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_on_a_busy_port_says_which():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = CliRunner().invoke(cli_app, ["serve", "--port", str(port), "--model", "fast"])
    assert r.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in r.output and "Traceback" not in r.output
