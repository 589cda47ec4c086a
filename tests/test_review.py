"""Review by hand: the sidecar of corrections, the local review server, and the page
itself driven in a real headless browser (Debian's chromium through Playwright)."""

import contextlib
import json
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from facepoints.data.corrections import sidecar_path
from facepoints.data.formats import read_dataset
from facepoints.curation.review import ReviewState, make_server
from facepoints.data.samples import AnnotationError
from helpers import write_300w_folder

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium; installed with apt-get when missing and we are root (as on a
    fresh CI machine). Playwright's own browser download is never used."""
    if not CHROMIUM.exists():
        if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip(f"{CHROMIUM} is missing and cannot be installed here (needs root and apt-get): "
                        "run `apt-get install -y chromium`")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        r = subprocess.run("apt-get update -q && apt-get install -y -q chromium", shell=True, env=env,
                           capture_output=True, text=True, timeout=1800)
        if r.returncode != 0 or not CHROMIUM.exists():
            pytest.skip(f"could not install chromium with apt-get (exit {r.returncode}): {r.stderr.strip()[-500:]}")
    return CHROMIUM


@pytest.fixture
def served(tmp_path):
    """A 4-face 300-W folder, a clean report flagging face002, and the review server on a
    free loopback port in a background thread."""
    folder = write_300w_folder(tmp_path / "ds", n=4)
    spec = f"300w:{folder}"
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"n": 4, "flagged": [
        {"id": "face002_1.jpg", "score": 3.5, "reasons": ["shape outlier"]},
        {"id": "not-in-dataset.jpg", "score": 1.0, "reasons": []}]}))
    state = ReviewState(spec, report=report)
    with serving(state) as (server, url):
        yield {"spec": spec, "folder": folder, "url": url, "state": state, "token": server.token,
               "sidecar": tmp_path / "ds.corrections.json", "server": server}


@contextlib.contextmanager
def serving(state):
    """The review server for ``state`` on a free loopback port, in a background thread."""
    server = make_server(state, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    _wait_listening(host, port)
    try:
        yield server, f"http://{host}:{port}/"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def test_sidecar_is_named_after_the_dataset(tmp_path):
    assert sidecar_path(tmp_path / "ds") == tmp_path / "ds.corrections.json"
    assert sidecar_path(tmp_path / "a.csv") == tmp_path / "a.csv.corrections.json"


def test_read_dataset_applies_the_sidecar(tmp_path):
    folder = write_300w_folder(tmp_path / "ds", n=3)
    plain = read_dataset(f"300w:{folder}")
    new = plain.samples[1].landmarks + 2.5
    sidecar_path(folder).write_text(json.dumps({"version": 1, "samples": {
        "face000_1.jpg": {"status": "dropped"},
        "face001_1.jpg": {"status": "fixed", "landmarks": new.tolist()},
        "face002_1.jpg": {"status": "accepted"}}}))
    ds = read_dataset(f"300w:{folder}")
    assert ds.ids() == ["face001_1.jpg", "face002_1.jpg"]
    np.testing.assert_allclose(ds.samples[0].landmarks, new, atol=1e-4)
    np.testing.assert_array_equal(ds.samples[1].landmarks, plain.samples[2].landmarks)
    assert any("1 of 3 samples dropped by review" in w for w in ds.warnings)
    ignored = read_dataset(f"300w:{folder}", corrections=False)
    assert ignored.ids() == plain.ids() and not ignored.warnings
    np.testing.assert_array_equal(ignored.samples[1].landmarks, plain.samples[1].landmarks)


def test_a_bad_sidecar_is_an_annotation_error(tmp_path):
    folder = write_300w_folder(tmp_path / "ds", n=2)
    side = sidecar_path(folder)
    side.write_text(json.dumps({"samples": {"face000_1.jpg": {"status": "maybe"}}}))
    with pytest.raises(AnnotationError, match="status must be one of"):
        read_dataset(f"300w:{folder}")
    side.write_text(json.dumps({"samples": {"face000_1.jpg": {"status": "fixed", "landmarks": [[1, 2]] * 5}}}))
    with pytest.raises(AnnotationError, match="5 corrected points, the dataset has 68"):
        read_dataset(f"300w:{folder}")


def _wait_listening(host, port, timeout=10.0):
    import socket
    import time

    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def _request(url, body=None, headers=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    auth = {"X-Review-Token": token} if token else {}
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **auth, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_server_api_order_and_guards(served):
    url, token = served["url"], served["token"]
    code, body = _request(url + "api/dataset")
    meta = json.loads(body)
    assert code == 200 and meta["n"] == 4 and meta["n_flagged"] == 1 and meta["unknown_flagged"] == 1
    assert [it["id"] for it in meta["items"]] == ["face002_1.jpg", "face000_1.jpg", "face001_1.jpg", "face003_1.jpg"]
    code, body = _request(url + "api/sample/0")
    s = json.loads(body)
    assert code == 200 and s["id"] == "face002_1.jpg" and (s["width"], s["height"]) == (200, 220)
    assert s["flag"]["reasons"] == ["shape outlier"]
    code, body = _request(url + "api/image/0")
    assert code == 200 and body[:2] == b"\xff\xd8"
    assert _request(url + "api/sample/9")[0] == 404
    # only JSON posts, only to a loopback Host name
    req = urllib.request.Request(url + "api/sample/0", data=b"action=drop",
                                 headers={"Content-Type": "application/x-www-form-urlencoded", "X-Review-Token": token})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 415
    assert _request(url + "api/dataset", headers={"Host": "evil.example:80"})[0] == 403
    # writes need the session's token: another local program cannot make decisions
    code, body = _request(url + "api/sample/0", {"action": "drop"})
    assert code == 403 and b"token" in body
    assert _request(url + "api/sample/0", {"action": "drop"}, token="guess")[0] == 403
    assert _request(url + "api/sample/0", {"action": "explode"}, token=token)[0] == 400
    assert _request(url + "api/sample/0", {"action": "accept", "landmarks": [[0, 0]]}, token=token)[0] == 400
    # nonsense fixes are refused: far outside the image, not finite
    far = [[-1e6, 1e6]] * 68
    code, body = _request(url + "api/sample/0", {"action": "accept", "landmarks": far}, token=token)
    assert code == 400 and b"within the 200x220 image" in body
    assert _request(url + "api/sample/0", {"action": "accept", "landmarks": [[float("nan"), 1.0]] * 68},
                    token=token)[0] == 400
    assert not served["sidecar"].exists()
    # accept without moving: "accepted"; reset forgets it
    s1 = json.loads(_request(url + "api/sample/1")[1])
    code, body = _request(url + "api/sample/1", {"action": "accept", "landmarks": s1["landmarks"]}, token=token)
    assert code == 200 and json.loads(body)["sample"]["status"] == "accepted"
    assert json.loads(served["sidecar"].read_text())["samples"] == {"face000_1.jpg": {"status": "accepted"}}
    code, body = _request(url + "api/sample/1", {"action": "reset"}, token=token)
    assert code == 200 and json.loads(served["sidecar"].read_text())["samples"] == {}


def test_two_review_sessions_on_one_dataset_keep_each_others_decisions(served):
    """A second server on the same sidecar: each write merges per sample, so neither
    session's later save writes back a stale copy of the other's."""
    with serving(ReviewState(served["spec"])) as (other, b):
        a = served["url"]
        # both loaded the (empty) sidecar before either wrote
        assert _request(a + "api/sample/1", {"action": "drop"}, token=served["token"])[0] == 200
        # the second session has no report: its order is face000..face003
        assert _request(b + "api/sample/2", {"action": "drop"}, token=other.token)[0] == 200  # face002
        assert _request(a + "api/sample/3", {"action": "drop"}, token=served["token"])[0] == 200
        side = json.loads(served["sidecar"].read_text())["samples"]
        assert set(side) == {"face000_1.jpg", "face002_1.jpg", "face003_1.jpg"}, side


def test_readers_name_the_sidecar_and_sample_of_an_unusable_fix(tmp_path):
    from facepoints.data.corrections import save_corrections
    from facepoints.data.samples import AnnotationError

    folder = write_300w_folder(tmp_path / "ds", n=3)
    sidecar = tmp_path / "ds.corrections.json"
    save_corrections(sidecar, {"face001_1.jpg": {"status": "fixed", "landmarks": [[-1e6, 1e6]] * 68}})
    with pytest.raises(AnnotationError) as e:
        read_dataset(f"300w:{folder}")
    assert str(sidecar) in str(e.value) and "face001_1.jpg" in str(e.value) and "outside" in str(e.value)


def test_review_in_a_browser(served, chromium):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    spec, url = served["spec"], served["url"]
    original = {s.id: s.landmarks for s in read_dataset(spec)}
    moved_point, shift = 30, np.array([6.0, -4.0])  # image pixels
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.goto(url + "?token=" + served["token"])
            page.wait_for_function("document.body.dataset.loaded === '0'", timeout=15000)
            # flagged first, with its landmarks drawn over the image
            assert page.text_content("#sid") == "face002_1.jpg"
            assert "shape outlier" in page.text_content("#flag")
            circles = page.locator("#points circle")
            assert circles.count() == 68
            assert page.evaluate("document.getElementById('img').getAttribute('href')") == "/api/image/0"
            page.wait_for_function("document.getElementById('img').getBBox().width > 0")
            cx = float(circles.nth(moved_point).get_attribute("cx"))
            assert abs(cx - original["face002_1.jpg"][moved_point][0]) < 1e-3
            # drag one point by a known offset in image pixels
            scale = page.evaluate("document.getElementById('view').getScreenCTM().a")
            box = circles.nth(moved_point).bounding_box()
            x0, y0 = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move(x0 + shift[0] * scale / 2, y0 + shift[1] * scale / 2, steps=3)
            page.mouse.move(x0 + shift[0] * scale, y0 + shift[1] * scale, steps=3)
            page.mouse.up()
            new_cx = float(circles.nth(moved_point).get_attribute("cx"))
            assert abs(new_cx - (original["face002_1.jpg"][moved_point][0] + shift[0])) < 1.0
            # accept saves the moved point and goes on to the next sample; drop that one
            page.click("#accept")
            page.wait_for_function("document.body.dataset.saved === '1' && document.body.dataset.loaded === '1'")
            assert page.text_content("#sid") == "face000_1.jpg"
            page.click("#drop")
            page.wait_for_function("document.body.dataset.saved === '2' && document.body.dataset.loaded === '2'")
            assert "1 fixed, 1 dropped" in page.text_content("#counts")
            # previous shows the dropped sample as dropped
            page.click("#prev")
            page.wait_for_function("document.body.dataset.loaded === '1'")
            assert page.text_content("#status") == "dropped"
        finally:
            browser.close()

    side = json.loads(served["sidecar"].read_text())["samples"]
    assert side["face000_1.jpg"] == {"status": "dropped"}
    fixed = side["face002_1.jpg"]
    assert fixed["status"] == "fixed"
    got = np.array(fixed["landmarks"])
    want = original["face002_1.jpg"].astype(np.float64)
    assert np.abs(got[moved_point] - (want[moved_point] + shift)).max() < 1.0
    others = np.arange(68) != moved_point
    assert np.abs(got[others] - want[others]).max() < 0.01
    assert set(side) == {"face000_1.jpg", "face002_1.jpg"}

    # every reader applies it: corrected landmarks, dropped sample left out and counted
    ds = read_dataset(spec)
    assert "face000_1.jpg" not in ds.ids() and len(ds) == 3
    assert any("1 of 4 samples dropped by review" in w for w in ds.warnings)
    corrected = {s.id: s.landmarks for s in ds}["face002_1.jpg"]
    assert np.abs(corrected[moved_point] - (want[moved_point] + shift)).max() < 1.0
    assert len(read_dataset(spec, corrections=False)) == 4


def test_review_command_serves_on_loopback(tmp_path):
    import sys

    folder = write_300w_folder(tmp_path / "ds", n=2)
    proc = subprocess.Popen([sys.executable, "-m", "facepoints.cli", "review", f"300w:{folder}", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("open http://"):
                break
        url, _, token = lines[-1].split()[1].partition("?token=")
        assert url.startswith("http://127.0.0.1:") and len(token) >= 16, lines
        assert "corrections go to" in "".join(lines) and str(tmp_path / "ds.corrections.json") in "".join(lines)
        code, body = _request(url + "api/dataset")
        assert code == 200 and json.loads(body)["n"] == 2
        code, body = _request(url)
        assert code == 200 and b"<svg" in body
        assert _request(url + "api/sample/0", {"action": "drop"})[0] == 403
        assert _request(url + "api/sample/0", {"action": "drop"}, token=token)[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_training_splits_apply_corrections_unless_told_not_to(tmp_path):
    from facepoints.training.config import TrainConfig
    from facepoints.training.loop import make_splits

    folder = write_300w_folder(tmp_path / "ds", n=3)
    sidecar_path(folder).write_text(json.dumps({"samples": {"face001_1.jpg": {"status": "dropped"}}}))

    def ids(**data):
        cfg = TrainConfig.model_validate({"data": {"train": [f"300w:{folder}"], "val_fraction": 0.0, **data}})
        return make_splits(cfg).train.ids()

    assert ids() == ["face000_1.jpg", "face002_1.jpg"]
    assert ids(corrections=False) == ["face000_1.jpg", "face001_1.jpg", "face002_1.jpg"]


def test_a_stale_tab_cannot_overwrite_a_newer_decision(served):
    """Two tabs load sample 1; tab B moves a point and accepts (a fix); tab A, still
    showing the old points, accepts: refused with 409, and B's fix is what the sidecar keeps."""
    url, token = served["url"], served["token"]
    tab_a = json.loads(_request(url + "api/sample/1")[1])
    tab_b = json.loads(_request(url + "api/sample/1")[1])
    assert tab_a["revision"] == tab_b["revision"] == "none"
    moved = [list(p) for p in tab_b["landmarks"]]
    moved[30] = [moved[30][0] + 5, moved[30][1]]
    code, body = _request(url + "api/sample/1", {"action": "accept", "landmarks": moved,
                                                  "revision": tab_b["revision"]}, token=token)
    assert code == 200 and json.loads(body)["sample"]["status"] == "fixed"
    code, body = _request(url + "api/sample/1", {"action": "accept", "landmarks": tab_a["landmarks"],
                                                  "revision": tab_a["revision"]}, token=token)
    assert code == 409 and b"changed in another tab" in body
    saved = json.loads(served["sidecar"].read_text())["samples"]
    assert [v["status"] for v in saved.values()] == ["fixed"]
