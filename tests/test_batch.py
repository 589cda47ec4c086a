"""Batch jobs (issue 28): folders, globs and manifests in; one JSON line per image out,
in input order, resumable; a kill -9 midway loses nothing written and duplicates nothing."""

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import pytest
from typer.testing import CliRunner

from conftest import EXAMPLES
from facepoints.cli import app
from facepoints.data.images import read_image
from facepoints.inference.batch import done_images, expand_inputs, read_manifest


@pytest.fixture
def photos(tmp_path):
    """40 small photos (the portrait at 200 px, each slightly shifted) and one that is not an image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    img = cv2.resize(read_image(EXAMPLES / "obama_portrait.jpg"), (200, 250))
    for i in range(40):
        cv2.imwrite(str(folder / f"p{i:03d}.jpg"), cv2.cvtColor(img[:, i % 5:][:, :195], cv2.COLOR_RGB2BGR))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_inputs_from_folders_globs_and_manifests(tmp_path, photos):
    (tmp_path / "list.txt").write_text("# two photos\nphotos/p001.jpg\n\nphotos/p002.jpg\n")
    (tmp_path / "list.csv").write_text("path,label\nphotos/p003.jpg,a\n")
    assert [p.name for p in read_manifest(tmp_path / "list.txt")] == ["p001.jpg", "p002.jpg"]
    assert [p.name for p in read_manifest(tmp_path / "list.csv")] == ["p003.jpg"]
    files, notes = expand_inputs([str(photos / "p00*.jpg"), f"@{tmp_path / 'list.csv'}", str(tmp_path / "none*.jpg")])
    assert len(files) == 11 and any("matches no file" in n for n in notes)


def test_jsonl_has_every_input_once_in_order_and_a_rerun_skips_them(tmp_path, photos):
    out = tmp_path / "r.jsonl"
    r = CliRunner().invoke(app, ["predict", str(photos), "--jsonl", str(out), "--workers", "2"])
    assert r.exit_code == 1 and "broken.jpg" in r.output  # the unreadable one is reported (and recorded)
    recs = _lines(out)
    files, _ = expand_inputs([str(photos)])
    assert [x["image"] for x in recs] == [str(f) for f in files]
    assert sum("error" in x for x in recs) == 1 and all(len(x["faces"]) == 1 for x in recs if "error" not in x)
    one = CliRunner().invoke(app, ["predict", str(photos / "p000.jpg"), "--json", "--workers", "1"])
    assert json.loads(one.stdout)["faces"] == recs[1]["faces"]  # the same landmarks from a worker process
    r = CliRunner().invoke(app, ["predict", str(photos), "--jsonl", str(out)])
    assert "41 of 41 image(s) already done" in r.output and len(_lines(out)) == 41


def test_kill_9_midway_then_rerun_gives_every_input_exactly_once(tmp_path, photos):
    (photos / "broken.jpg").unlink()
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "facepoints.cli", "predict", str(photos), "--jsonl", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and (not out.exists() or len(out.read_bytes().splitlines()) < 8):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = out.read_bytes()
    assert 8 <= len(before.splitlines()) < 40
    with open(out, "ab") as fh:  # what a kill in the middle of a write leaves
        fh.write(b'{"image": "cut')
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    recs = _lines(out)
    assert sorted(x["image"] for x in recs) == sorted(str(p) for p in photos.glob("*.jpg"))
    assert out.read_bytes().startswith(before)  # what was written before the kill is kept as it was
    assert done_images(out) == {x["image"] for x in recs}


def test_ray_engine_gives_the_local_landmarks_and_resumes(tmp_path, photos):
    """--engine ray on a local Ray instance (started and stopped by the job): the records
    of the local path, in input order (the unreadable image recorded as an error), and
    a re-run of the same --jsonl skips what it holds."""
    pytest.importorskip("ray.data")
    subset = [str(photos / f"p{i:03d}.jpg") for i in range(12)] + [str(photos / "broken.jpg")]
    local, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    r = CliRunner().invoke(app, ["predict", *subset, "--jsonl", str(local), "--workers", "1"])
    assert r.exit_code == 1
    (tmp_path / "half.jsonl").write_text("".join(json.dumps(x) + "\n" for x in _lines(local)[:5]))
    ray_out.write_bytes((tmp_path / "half.jsonl").read_bytes())     # as if a first run had stopped after 5
    r = CliRunner().invoke(app, ["predict", *subset, "--jsonl", str(ray_out), "--engine", "ray", "--workers", "2",
                                 "--out", str(tmp_path / "drawn")])
    assert r.exit_code == 1 and "5 of 13 image(s) already done" in r.output, r.output
    # the actors wrote the --out files of the images they did (not those already in the file)
    assert sorted(p.name for p in (tmp_path / "drawn").glob("*.json")) == [f"p{i:03d}.json" for i in range(5, 12)]
    assert len(list((tmp_path / "drawn").glob("*.png"))) == 7
    a, b = _lines(local), _lines(ray_out)
    assert [x["image"] for x in b] == subset and sum("error" in x for x in b) == 1
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for fx, fy in zip(x.get("faces", []), y.get("faces", [])):
            assert max(abs(p - q) for u, v in zip(fx["landmarks"], fy["landmarks"]) for p, q in zip(u, v)) <= 0.01


def test_engine_options_are_checked(tmp_path, photos, monkeypatch):
    r = CliRunner().invoke(app, ["predict", str(photos / "p000.jpg"), "--engine", "spark"])
    assert r.exit_code == 2 and "--engine spark: choose local or ray" in r.output
    r = CliRunner().invoke(app, ["predict", str(photos / "p000.jpg"), "--ray-address", "auto"])
    assert r.exit_code == 2 and "--ray-address goes with --engine ray" in r.output
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    r = CliRunner().invoke(app, ["predict", str(photos / "p000.jpg"), "--engine", "ray"])
    assert r.exit_code != 0 and r.output.strip().splitlines() == [
        "error: --engine ray needs Ray Data: pip install 'facepoints[ray]'"], r.output
