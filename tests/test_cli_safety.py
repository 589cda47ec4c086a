"""What the commands must never do to a user's files, and the clear errors instead of
tracebacks: outputs that collide or overwrite inputs, odd file names, bad options."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from facepoints.cli import app
from conftest import EXAMPLES

runner = CliRunner()
PHOTO = EXAMPLES / "astronaut.jpg"


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_names_in_two_folders_give_two_results(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    shutil.copy(PHOTO, tmp_path / "a" / "face.jpg")
    shutil.copy(EXAMPLES / "biden.jpg", tmp_path / "b" / "face.jpg")
    shutil.copy(EXAMPLES / "obama_portrait.jpg", tmp_path / "a" / "face.png")  # same stem, other suffix
    out = tmp_path / "O"
    r = runner.invoke(app, ["predict", str(tmp_path / "a" / "face.jpg"), str(tmp_path / "b" / "face.jpg"),
                            str(tmp_path / "a" / "face.png"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a/face.jpg.json", "a/face.jpg.png", "a/face.png.json", "a/face.png.png",
                       "b/face.json", "b/face.png"]
    images = {json.loads((out / n).read_text())["image"] for n in written if n.endswith(".json")}
    assert len(images) == 3


def test_predict_into_the_input_folder_leaves_every_input_untouched(tmp_path, monkeypatch):
    shutil.copy(PHOTO, tmp_path / "face.png")  # an input whose annotated output would be face.png
    shutil.copy(EXAMPLES / "biden.jpg", tmp_path / "other.jpg")
    before = digest(tmp_path)
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["predict", ".", "--out", "."])
    assert r.exit_code == 2 and "would overwrite the input" in r.output and "Traceback" not in r.output
    assert digest(tmp_path) == before  # nothing written at all


@pytest.mark.parametrize("make_out, words", [
    (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt", "exists and is not a folder"),
    (lambda tmp: "/proc/facepoints-test/out", "cannot create the folder"),
])
def test_predict_out_that_cannot_be_a_folder_is_an_error(tmp_path, make_out, words):
    r = runner.invoke(app, ["predict", str(PHOTO), "--out", str(make_out(tmp_path))])
    assert r.exit_code == 2 and words in r.output and "Traceback" not in r.output, r.output


def test_bad_thread_counts_are_usage_errors():
    for cmd in (["predict", str(PHOTO)], ["evaluate", "300w:/x"], ["track", "x.mp4"], ["serve"]):
        r = runner.invoke(app, [*cmd, "--threads", "-5"])
        assert r.exit_code == 2 and "--threads" in r.output and "Traceback" not in r.output, cmd


def test_non_utf8_file_names_are_read_and_written(tmp_path):
    """OpenCV's imwrite crashed (exit 139) on such names; images go through Python's files."""
    folder = os.fsencode(tmp_path) + b"/caf\xe9"
    os.mkdir(folder)
    shutil.copy(PHOTO, os.path.join(folder, b"ph\xf6to.jpg"))
    out = os.fsdecode(os.fsencode(tmp_path) + b"/out\xff")
    code = ("import sys; from facepoints.cli import app; "
            f"sys.argv = ['facepoints', 'predict', {os.fsdecode(folder)!r}, '--out', {out!r}]; app()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    names = sorted(os.listdir(os.fsencode(out)))
    assert names == [b"ph\xf6to.json", b"ph\xf6to.png"]
    assert os.path.getsize(os.path.join(os.fsencode(out), b"ph\xf6to.png")) > 1000
    labels = os.fsdecode(os.fsencode(tmp_path) + b"/lab\xe9ls")
    code = ("import sys; from facepoints.cli import app; "
            f"sys.argv = ['facepoints', 'label', {os.fsdecode(folder)!r}, '--out', '300w:' + {labels!r}]; app()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert sorted(os.listdir(os.fsencode(labels))) == [b".facepoints-label.jsonl", b"confidence.csv", b"ph\xf6to_1.jpg",
                                                       b"ph\xf6to_1.pts"]  # the journal: what a re-run resumes from


def test_export_refuses_to_overwrite_its_own_model_and_other_bad_outputs(tmp_path):
    from facepoints.models.package import BUNDLED

    model = tmp_path / "m.safetensors"
    shutil.copy(BUNDLED, model)
    before = model.read_bytes()
    r = runner.invoke(app, ["export", "--model", str(model), "--format", "onnx", "--out", str(model)])
    assert r.exit_code != 0 and "is the model file being exported" in r.output and "Traceback" not in r.output
    assert model.read_bytes() == before
    r = runner.invoke(app, ["export", "--model", str(model), "--format", "onnx", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "is a folder" in r.output and "Traceback" not in r.output
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    r = runner.invoke(app, ["export", "--model", str(model), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                            "--images", str(bad)])
    assert r.exit_code != 0 and "notes.jpg" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["export", "--model", str(model), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                            "--images", str(tmp_path / "missing.jpg")])
    assert r.exit_code != 0 and "no such file" in r.output
    assert not (tmp_path / "m.onnx").exists()


def test_label_writes_every_face_once_and_never_into_its_inputs(tmp_path):
    for d in ("a", "b"):
        (tmp_path / "in" / d).mkdir(parents=True)
    shutil.copy(PHOTO, tmp_path / "in" / "a" / "face.jpg")
    shutil.copy(EXAMPLES / "biden.jpg", tmp_path / "in" / "b" / "face.jpg")
    shutil.copy(EXAMPLES / "two_faces_composite.jpg", tmp_path / "in" / "b" / "two.jpg")
    before = digest(tmp_path / "in")
    out = tmp_path / "labels"
    r = runner.invoke(app, ["label", str(tmp_path / "in"), "--out", f"300w:{out}"])
    assert r.exit_code == 0, r.output
    pts = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.pts"))
    assert pts == ["a/face_1.pts", "b/face_1.pts", "two_1.pts", "two_2.pts"]
    rows = (out / "confidence.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[0] for r in rows) == ["a/face_1.jpg", "b/face_1.jpg", "two_1.jpg", "two_2.jpg"]
    # into the input folder, where a photo is named like the labelled face of another: refused
    shutil.copy(PHOTO, tmp_path / "in" / "b" / "two_1.jpg")
    before = digest(tmp_path / "in")
    r = runner.invoke(app, ["label", str(tmp_path / "in" / "b"), "--out", f"300w:{tmp_path / 'in' / 'b'}"])
    assert r.exit_code == 2 and "would overwrite the input" in r.output and "Traceback" not in r.output
    assert digest(tmp_path / "in") == before


def test_evaluate_reports_labels_far_outside_the_image(tmp_path):
    import numpy as np

    from facepoints.data.formats import read_pts, write_pts
    from helpers import write_300w_folder

    folder = write_300w_folder(tmp_path / "ds", n=3)
    pts_file = sorted(folder.glob("*.pts"))[1]
    pts = read_pts(pts_file)
    pts[7] = [-50000.0, 10.0]
    write_pts(pts, pts_file)
    r = runner.invoke(app, ["evaluate", f"300w:{folder}", "--json", "--ced", str(tmp_path / "ced.png")])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout.strip().splitlines()[-1])
    (msg,) = s["labels_outside_image"]
    assert pts_file.name in msg and "point 7 at (-50000, 10)" in msg
    assert f"warning: {msg}" in r.output and f"wrote the CED plot to {tmp_path / 'ced.png'}" in r.output
    assert np.isfinite(s["nme_io"])


def test_an_unknown_detector_is_reported_once_before_the_batch():
    r = runner.invoke(app, ["predict", str(PHOTO), str(EXAMPLES / "biden.jpg"), "--detector", "nope"])
    assert r.exit_code == 2 and r.output.count("unknown face detector 'nope'") == 1


def test_errors_name_the_file(tmp_path):
    from helpers import write_300w_folder

    folder = write_300w_folder(tmp_path / "ds", n=2)
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    r = runner.invoke(app, ["review", f"300w:{folder}", "--report", str(text), "--port", "0"])
    assert r.exit_code == 2 and f"--report {text}: not a clean report" in r.output
    pts = sorted(folder.glob("*.pts"))[0]
    pts.write_text(pts.read_text(), encoding="utf-16")
    r = runner.invoke(app, ["evaluate", f"300w:{folder}"])
    assert r.exit_code == 2 and pts.name in r.output and "UTF-16" in r.output


def test_folder_scans_say_what_they_skipped(tmp_path):
    shutil.copy(PHOTO, tmp_path / "a.jpg")
    (tmp_path / "b.gif").write_bytes(b"GIF89a")
    (tmp_path / "c.heic").write_bytes(b"\x00")
    (tmp_path / "notes.txt").write_text("x")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "d.jpg")
    r = runner.invoke(app, ["predict", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    assert len([line for line in r.stdout.splitlines() if line.startswith("{")]) == 1
    err = r.stderr
    assert "b.gif: .gif images are not supported" in err and "c.heic: .heic images are not supported" in err
    assert "d.jpg: a broken symbolic link" in err and "1 other file(s) that are not images ignored" in err
