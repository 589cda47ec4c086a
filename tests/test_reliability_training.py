"""Training never loses a run silently (issue 31): diverged runs stop without saving, one
output folder takes one trainer, resumes leave no temp files or repeated epochs, model
files get ordinary permissions, a failed write is one line."""

import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from typer.testing import CliRunner

from facepoints.cli import app
from facepoints.errors import FacepointsError, TrainingError
from facepoints.training.config import load_config
from facepoints.training.loop import train
from test_training import tiny_config


def test_a_diverged_run_stops_with_one_line_and_saves_no_model(tmp_path):
    path = tiny_config(tmp_path, optim={"batch_size": 4, "epochs": 2, "lr": 1e12})
    res = CliRunner().invoke(app, ["train", str(path), "--no-progress"])
    assert res.exit_code == 1, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not finite" in errors[0] and "Traceback" not in res.output
    assert not (tmp_path / "run" / "best.safetensors").exists()
    assert not (tmp_path / "run" / "final.safetensors").exists()
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if (tmp_path / "run" / "metrics.jsonl").exists() else []:
        assert "NaN" not in line


def test_a_second_trainer_on_the_same_folder_is_refused(tmp_path):
    path = tiny_config(tmp_path, optim={"batch_size": 4, "epochs": 30, "lr": 0.001})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen([sys.executable, "-m", "facepoints.cli", "train", str(path), "--no-progress"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        lock = tmp_path / "run" / ".lock"
        for _ in range(600):
            if lock.exists() and "pid" in lock.read_text():
                break
            time.sleep(0.1)
        with pytest.raises(TrainingError, match="in use by another training run"):
            train(load_config(path, {"output": str(tmp_path / "run")}), resume=False, progress=False)
    finally:
        first.kill()
        first.wait()


def test_resume_after_a_kill_leaves_no_temp_files_and_no_repeated_epochs(tmp_path):
    path = tiny_config(tmp_path, optim={"batch_size": 4, "epochs": 3, "lr": 0.001})
    cfg = load_config(path, {"optim.epochs": 3})
    train(load_config(path, {"max_steps": 4}), progress=False)  # two epochs of 2 steps, then stopped
    run = tmp_path / "run"
    # what a kill mid-write and a kill after the metrics line but before the checkpoint leave
    (run / ".last.pt.tmp12345").write_bytes(b"partial")
    (run / ".best.safetensors.tmp999").write_bytes(b"partial")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines + [json.dumps({"epoch": 3, "loss": 1.0})]) + "\n")
    train(cfg, resume=True, progress=False)
    assert not list(run.glob(".*.tmp*"))
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    umask = os.umask(0)
    os.umask(umask)
    for f in ("best.safetensors", "final.safetensors", "last.pt"):
        assert (run / f).stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_model_write_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import facepoints.models.package as package

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(package, "save_file", full_disk)
    path = tiny_config(tmp_path, optim={"batch_size": 4, "epochs": 1, "lr": 0.001})
    with pytest.raises(FacepointsError, match="could not be written \\(No space left on device\\)"):
        train(load_config(path), progress=False)
    assert not list((tmp_path / "run").glob(".*.tmp*"))


def test_the_crop_cache_sees_a_replaced_image_and_is_only_a_cache(tmp_path, caplog):
    import cv2
    import numpy as np

    from facepoints.data.crop_cache import build_cache
    from facepoints.data.formats import read_dataset
    from helpers import write_300w_folder

    data = write_300w_folder(tmp_path / "d", n=2)
    ds = read_dataset(f"300w:{data}")
    first = build_cache(ds, 32, 1.25, cache_dir=tmp_path / "cache", progress=False)
    img = data / "face000_1.jpg"
    st = img.stat()
    other = cv2.imread(str(img))
    other[:] = 255 - other  # the same size, other pixels
    cv2.imwrite(str(img), other)
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))  # the mtime set back
    second = build_cache(read_dataset(f"300w:{data}"), 32, 1.25, cache_dir=tmp_path / "cache", progress=False)
    assert not np.array_equal(first.images[0], second.images[0])
    # a cache folder that cannot be written: a warning, and the crops all the same
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    with caplog.at_level("WARNING"):
        third = build_cache(ds, 32, 1.25, cache_dir=blocked / "sub", progress=False)
    assert "crop cache not saved" in caplog.text and np.array_equal(third.images, second.images)


def test_resume_after_training_faces_were_deleted_is_refused(tmp_path):
    from facepoints.training.loop import ResumeError

    path = tiny_config(tmp_path, optim={"batch_size": 4, "epochs": 3, "lr": 0.001})
    train(load_config(path, {"max_steps": 2}), progress=False)
    for f in sorted((tmp_path / "faces").glob("face00[0-2]_1.*")):
        f.unlink()
    with pytest.raises(ResumeError, match="the training data changed since the run started"):
        train(load_config(path), resume=True, progress=False)


def test_kill_9_inside_an_epoch_then_resume_matches_uninterrupted(tmp_path):
    """checkpoint_minutes: 0 writes last.pt after every step; a run killed inside its
    first epoch and resumed ends with the same weights as one never interrupted."""
    import signal

    import torch

    from facepoints.models.package import load_checkpoint, load_model

    path = tiny_config(tmp_path, output=str(tmp_path / "killed"), checkpoint_minutes=0,
                       optim={"batch_size": 2, "epochs": 2, "lr": 0.001}, augment={"occlusion": 0.5})
    cfg = yaml.safe_load(path.read_text())  # 18 steps an epoch (not 4): the kill lands inside it on a busy machine
    cfg["data"]["train"] = [{"spec": cfg["data"]["train"][0], "repeat": 4}]
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "facepoints.cli", "train", str(path), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ckpt = tmp_path / "killed" / "last.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            mid = load_checkpoint(ckpt).get("mid_epoch") if ckpt.exists() else None
        except Exception:  # noqa: BLE001 (caught mid-rename)
            mid = None
        if mid and mid["batches"] >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 0 and state["mid_epoch"]["batches"] >= 2, "not killed inside the first epoch"
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    train(load_config(path, {"output": str(tmp_path / "full")}), progress=False)
    a, _ = load_model(tmp_path / "full" / "final.safetensors")
    b, _ = load_model(tmp_path / "killed" / "final.safetensors")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_val_subset_validates_on_fewer_faces(tmp_path):
    from facepoints.training.loop import make_splits

    full = make_splits(load_config(tiny_config(tmp_path)))
    cfg = load_config(tiny_config(tmp_path), {"data.val_subset": 1})
    assert len(make_splits(cfg).val) == 1 < len(full.val)
