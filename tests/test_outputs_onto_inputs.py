"""Outputs never land on inputs, never go through links, never half-written (issue 31,
items 8-11, 16, 17), each with real files and the real commands."""

import json
import shutil

import cv2
from typer.testing import CliRunner

from conftest import EXAMPLES
from facepoints.cli import app
from facepoints.data.formats import read_dataset, write_pts
from facepoints.data.images import read_image
from helpers import write_300w_folder

runner = CliRunner()


def _video(path, n=6):
    img = cv2.resize(read_image(EXAMPLES / "astronaut.jpg"), (160, 160))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 160))
    for _ in range(n):
        w.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    w.release()
    return path


def _frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def test_track_onto_its_own_input_is_refused_and_the_video_is_intact(tmp_path):
    video = _video(tmp_path / "v.mp4")
    before = video.read_bytes()
    r = runner.invoke(app, ["track", str(video), "--out", str(video)])
    assert r.exit_code == 2 and "is an input of this run" in r.output
    assert video.read_bytes() == before and _frames(video) == 6
    out = tmp_path / "o.mp4"
    assert runner.invoke(app, ["track", str(video), "--out", str(out)]).exit_code == 0
    assert _frames(out) == 6 and not list(tmp_path.glob(".*tmp*"))


def test_label_never_writes_into_a_labelled_dataset(tmp_path):
    data = write_300w_folder(tmp_path / "human", n=2)
    shutil.copy(EXAMPLES / "obama_portrait.jpg", data / "obama_portrait.jpg")
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    r = runner.invoke(app, ["label", str(data / "obama_portrait.jpg"), "--out", f"300w:{data}"])
    assert r.exit_code == 2 and "did not write" in r.output
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before


def test_label_goes_on_after_an_interruption_without_redoing_or_losing_faces(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("obama_portrait.jpg", "biden.jpg"):
        shutil.copy(EXAMPLES / name, photos / name)
    out = tmp_path / "labels"
    # the first run saw one photo only (as a run killed after it would have)
    assert runner.invoke(app, ["label", str(photos / "obama_portrait.jpg"), "--out", f"300w:{out}"]).exit_code == 0
    first = (out / "obama_portrait_1.jpg").stat().st_mtime_ns
    with open(out / ".facepoints-label.jsonl", "a") as fh:
        fh.write('{"name": "biden_1.jpg", "photo": "bid')  # a line cut by kill -9
    r = runner.invoke(app, ["label", str(photos), "--out", f"300w:{out}"])
    assert r.exit_code == 0, r.output
    ds = read_dataset(f"300w:{out}")
    assert sorted(ds.ids()) == ["biden_1.jpg", "obama_portrait_1.jpg"]
    assert (out / "obama_portrait_1.jpg").stat().st_mtime_ns == first  # not labelled twice
    done = [json.loads(x)["done"] for x in (out / ".facepoints-label.jsonl").read_text().splitlines()
            if x.startswith('{"done"')]
    assert sorted(done) == ["biden", "obama_portrait"]


def test_evaluate_and_stats_never_overwrite_dataset_files(tmp_path):
    data = write_300w_folder(tmp_path / "d", n=3)
    img = data / "face000_1.jpg"
    before = img.read_bytes()
    r = runner.invoke(app, ["evaluate", f"300w:{data}", "--ced", str(img)])
    assert r.exit_code == 2 and "is an input of this run" in r.output and img.read_bytes() == before
    # a dataset image named like one of stats' plots
    shutil.copy(img, data / "yaw.png")
    write_pts(read_dataset(f"300w:{data}").samples[0].landmarks, data / "yaw.pts")
    before = (data / "yaw.png").read_bytes()
    r = runner.invoke(app, ["stats", f"300w:{data}", "--out", str(data)])
    assert r.exit_code == 2 and "is an input of this run" in r.output and (data / "yaw.png").read_bytes() == before


def test_predict_does_not_write_through_a_planted_link(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "astronaut.json").symlink_to(victim)
    r = runner.invoke(app, ["predict", str(EXAMPLES / "astronaut.jpg"), "--out", str(out)])
    assert r.exit_code == 2 and "symbolic link" in r.output
    assert victim.read_text() == "keep me" and not list(out.glob(".*tmp*"))


def test_pts_files_in_any_letter_case_are_read(tmp_path):
    data = write_300w_folder(tmp_path / "d", n=3)
    (data / "face001_1.pts").rename(data / "face001_1.PTS")
    (data / "face002_1.pts").rename(data / "face002_1.Pts")
    assert len(read_dataset(f"300w:{data}")) == 3


def test_track_writes_a_browser_playable_webm_and_says_when_mp4_cannot_be_h264(tmp_path):
    from facepoints.data.video import open_video_writer

    video = _video(tmp_path / "v.mp4")
    r = runner.invoke(app, ["track", str(video), "--out", str(tmp_path / "o.webm")])
    assert r.exit_code == 0 and _frames(tmp_path / "o.webm") == 6
    cap = cv2.VideoCapture(str(tmp_path / "o.webm"))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode(errors="replace").upper()
    assert fourcc.startswith("VP"), fourcc  # VP9 (or VP8): what browsers play in WebM
    writer, codec = open_video_writer(tmp_path / "probe.mp4", 10, (32, 32))
    writer.release()
    r = runner.invoke(app, ["track", str(video), "--out", str(tmp_path / "o.mp4")])
    assert r.exit_code == 0 and _frames(tmp_path / "o.mp4") == 6
    assert ("no H.264 encoder" in r.output) == (codec != "avc1")
