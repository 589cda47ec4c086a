import json

import numpy as np
import pytest
import yaml

from facepoints.models.package import load_model
from facepoints.training.config import ConfigError, load_config
from facepoints.training.loop import lr_factor, make_splits, train
from helpers import write_300w_folder


def tiny_config(tmp_path, **over):
    data = write_300w_folder(tmp_path / "faces", n=12)
    cfg = {
        "name": "tiny", "seed": 3, "output": str(tmp_path / "run"),
        "data": {"train": [f"300w:{data}"], "val_fraction": 0.25, "cache_dir": str(tmp_path / "cache")},
        "model": {"backbone": "mobilenet_v3_small", "input_size": 48},
        "optim": {"batch_size": 4, "epochs": 2, "lr": 0.001},
        "threads": 1,
    }
    for k, v in over.items():
        cfg[k] = v
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_smoke_training_writes_a_loadable_model(tmp_path):
    cfg = load_config(tiny_config(tmp_path))
    best = train(cfg, progress=False)
    model, info = load_model(best)
    assert info.input_size == 48 and info.landmark_scheme.name == "ibug68"
    assert info.backbone == "mobilenet_v3_small"
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["val_nme_io"]) for r in lines)
    assert (tmp_path / "run" / "last.pt").is_file()


def test_existing_run_needs_resume(tmp_path):
    cfg = load_config(tiny_config(tmp_path, max_steps=1))
    train(cfg, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, progress=False)


def test_resume_after_interruption_gives_identical_weights(tmp_path):
    """Stopping after epoch 1 and resuming ends exactly where an uninterrupted run ends."""
    import torch

    full = load_config(tiny_config(tmp_path))
    train(full, progress=False)
    a, _ = load_model(tmp_path / "run" / "final.safetensors")
    cut = load_config(tiny_config(tmp_path, output=str(tmp_path / "run2")))
    cut_first = cut.model_copy(deep=True)
    cut_first.max_steps = len(make_splits(cut).train) // 4  # stops right after epoch 1
    train(cut_first, progress=False)
    train(cut, resume=True, progress=False)
    b, _ = load_model(tmp_path / "run2" / "final.safetensors")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_split_keeps_groups_together(tmp_path):
    cfg = load_config(tiny_config(tmp_path))
    s = make_splits(cfg)
    assert len(s.train) + len(s.val) == 12
    assert not {x.group for x in s.train} & {x.group for x in s.val}


def test_repeat_zero_keeps_a_source_for_validation_only(tmp_path):
    # The same split as with repeat 1, but the source's training part is not used.
    both = make_splits(load_config(tiny_config(tmp_path)))
    path = tiny_config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["train"] = [{"spec": cfg["data"]["train"][0], "repeat": 0}]
    path.write_text(yaml.safe_dump(cfg))
    val_only = make_splits(load_config(path))
    assert len(val_only.train) == 0 and val_only.repeats == []
    assert [x.id for x in val_only.val] == [x.id for x in both.val] and len(both.val) > 0


def test_config_errors_name_the_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"data": {"train": ["300w:x"]}, "model": {"input_size": 7}}))
    with pytest.raises(ConfigError, match="input_size"):
        load_config(p)
    p.write_text(yaml.safe_dump({"data": {"train": ["300w:x"]}, "optim": {"lrr": 1}}))
    with pytest.raises(ConfigError, match="lrr"):
        load_config(p)


def test_data_overrides_are_added_to_the_training_data_note(tmp_path):
    path = tiny_config(tmp_path, note="faces x1")
    assert load_config(path, {"optim.epochs": 3}).note == "faces x1"
    cfg = load_config(path, {"data.train.0.repeat": 8, "optim.epochs": 3})
    assert cfg.data.train[0].repeat == 8
    assert cfg.note == "faces x1 (overridden: data.train.0.repeat=8)"
    assert load_config(path, {"data.val_fraction": 0.5, "note": "mine"}).note == "mine"
    assert load_config(tiny_config(tmp_path), {"data.val_fraction": 0.5}).note == ""


def test_warmup_then_cosine():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0)


def test_kill_9_mid_run_then_resume_matches_uninterrupted(tmp_path):
    """A run killed with SIGKILL (no chance to clean up) resumes from its last atomic
    checkpoint and ends bit-identical to a run that was never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    cfg_path = tiny_config(tmp_path, output=str(tmp_path / "killed"))
    cfg_path.write_text(cfg_path.read_text().replace("epochs: 2", "epochs: 4"))
    cmd = [sys.executable, "-m", "facepoints.cli", "train", str(cfg_path), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    ckpt = tmp_path / "killed" / "last.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "killed" / "final.safetensors").exists()
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]

    full = load_config(cfg_path, {"output": str(tmp_path / "full")})
    train(full, progress=False)
    a, _ = load_model(tmp_path / "full" / "final.safetensors")
    b, _ = load_model(tmp_path / "killed" / "final.safetensors")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_ema_weights_are_what_gets_saved(tmp_path):
    """With optim.ema the saved model is the moving average, not the last weights."""
    import torch

    cfg = load_config(tiny_config(tmp_path), {"optim.ema": 0.9})
    train(cfg, progress=False)
    saved, _ = load_model(tmp_path / "run" / "final.safetensors")
    from facepoints.models.package import load_checkpoint

    raw = load_checkpoint(tmp_path / "run" / "last.pt")
    ema_state = {k.removeprefix("module."): v for k, v in raw["ema"].items() if k.startswith("module.")}
    for k, v in saved.state_dict().items():
        assert torch.equal(v, ema_state[k]), k
    differs = any(not torch.equal(v, raw["model"][k]) for k, v in saved.state_dict().items() if v.is_floating_point())
    assert differs


def test_unreadable_training_images_are_reported_together_or_skipped(tmp_path):
    from typer.testing import CliRunner

    from facepoints.cli import app

    cfg_path = tiny_config(tmp_path, max_steps=1)
    faces = tmp_path / "faces"
    for name in ("face002_1.jpg", "face007_1.jpg"):
        data = (faces / name).read_bytes()
        (faces / name).write_bytes(data[: len(data) // 3])
    r = CliRunner().invoke(app, ["train", str(cfg_path), "--no-progress"])
    assert r.exit_code == 2
    assert "2 of" in r.output and "face002_1.jpg" in r.output and "face007_1.jpg" in r.output
    cfg = load_config(cfg_path, {"data.skip_bad_images": True, "output": str(tmp_path / "skip")})
    train(cfg, progress=False)
    assert (tmp_path / "skip" / "final.safetensors").is_file()


def test_init_from_starts_from_the_given_weights(tmp_path):
    import torch

    first = load_config(tiny_config(tmp_path), {"max_steps": 2})
    train(first, progress=False)
    start, _ = load_model(tmp_path / "run" / "final.safetensors")
    second = load_config(tiny_config(tmp_path), {"output": str(tmp_path / "ft"), "max_steps": 1,
                                                 "model.init_from": str(tmp_path / "run" / "final.safetensors"),
                                                 "optim.lr": 1e-12, "optim.weight_decay": 0.0})
    train(second, progress=False)
    tuned, _ = load_model(tmp_path / "ft" / "final.safetensors")
    for (k, a), b in zip(start.named_parameters(), tuned.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=k)
    bad = load_config(tiny_config(tmp_path), {"output": str(tmp_path / "bad"), "model.backbone": "resnet18",
                                              "model.init_from": str(tmp_path / "run" / "final.safetensors")})
    with pytest.raises(ValueError, match="cannot start"):
        train(bad, progress=False)


def test_cli_set_overrides_any_key_and_is_validated(tmp_path):
    from typer.testing import CliRunner

    from facepoints.cli import app

    cfg_path = tiny_config(tmp_path, max_steps=1)
    r = CliRunner().invoke(app, ["train", str(cfg_path), "--no-progress", "--set", "model.input_size=7"])
    assert r.exit_code == 2 and "input_size" in r.output
    r = CliRunner().invoke(app, ["train", str(cfg_path), "--no-progress", "--set", "model.input_size"])
    assert r.exit_code == 2 and "KEY=VALUE" in r.output
    r = CliRunner().invoke(app, ["train", str(cfg_path), "--no-progress", "--set", "model.input_size=40",
                                 "--set", "optim.epochs=1"])
    assert r.exit_code == 0, r.output
    _, info = load_model(tmp_path / "run" / "final.safetensors")
    assert info.input_size == 40


def test_distillation_pulls_the_student_towards_the_teacher(tmp_path):
    """A teacher that always answers the same shape, 0.1 crop widths right of the
    annotations' mean: with distill.weight 1 the student learns the teacher's answer,
    with weight 0 it keeps to the annotations. The teacher runs at another input size
    (64 px vs the student's 48), so the resampling path is exercised too."""
    import torch

    from facepoints.data.crop_cache import build_cache
    from facepoints.models.package import save_model
    from facepoints.training.loop import predict_crops

    train(load_config(tiny_config(tmp_path), {"output": str(tmp_path / "t"), "max_steps": 1,
                                              "model.input_size": 64}), progress=False)
    teacher, info = load_model(tmp_path / "t" / "final.safetensors")
    with torch.no_grad():
        target = teacher.head.fc.bias.clone()
        target[0::2] += 0.1
        teacher.head.fc.weight.zero_()
        teacher.head.fc.bias.copy_(target)
    save_model(teacher, info, tmp_path / "teacher.safetensors")

    def distance(weight):
        cfg = load_config(tiny_config(tmp_path), {
            "output": str(tmp_path / f"s{weight}"), "optim.epochs": 40, "optim.batch_size": 10, "optim.lr": 0.005, "optim.warmup_epochs": 0,
            "augment.enabled": False,
            "distill": {"teacher": str(tmp_path / "teacher.safetensors"), "weight": weight}})
        train(cfg, progress=False)  # best.safetensors is the epoch closest to the annotations: use the last
        student, _ = load_model(tmp_path / f"s{weight}" / "final.safetensors")
        crops = build_cache(make_splits(cfg).train, 48, 1.25, cache_dir=None, progress=False)
        o = (crops.size - 48) // 2  # cached crops carry a margin around the network's crop
        out = (predict_crops(student, crops.images, 48) - o) / 47  # normalised crop units, like the teacher's
        return float(np.abs(out.reshape(len(out), -1) - target.numpy()).mean())

    near, far = distance(1.0), distance(0.0)
    assert near < 0.5 * far, (near, far)
    assert far > 0.05  # the undistilled student stays near the annotations, ~0.1 away on x


def test_distillation_teacher_must_crop_like_the_student(tmp_path):
    train(load_config(tiny_config(tmp_path), {"output": str(tmp_path / "t"), "max_steps": 1,
                                              "model.crop_scale": 1.5}), progress=False)
    cfg = load_config(tiny_config(tmp_path), {"output": str(tmp_path / "s"), "max_steps": 1,
                                              "distill": {"teacher": str(tmp_path / "t" / "final.safetensors")}})
    with pytest.raises(ValueError, match="crop_scale"):
        train(cfg, progress=False)
    with pytest.raises(ConfigError, match="heatmaps"):
        load_config(tiny_config(tmp_path), {"model.head": "heatmap", "loss.name": "awing",
                                            "distill": {"teacher": "x.safetensors"}})


def test_init_from_a_regression_model_gives_a_heatmap_run_its_trunk(tmp_path):
    import torch

    train(load_config(tiny_config(tmp_path), {"max_steps": 1}), progress=False)
    reg, _ = load_model(tmp_path / "run" / "final.safetensors")
    cfg = load_config(tiny_config(tmp_path), {"output": str(tmp_path / "hm"), "max_steps": 1, "optim.lr": 1e-12,
                                              "optim.weight_decay": 0.0, "model.head": "heatmap",
                                              "model.init_from": str(tmp_path / "run" / "final.safetensors")})
    train(cfg, progress=False)
    hm, info = load_model(tmp_path / "hm" / "final.safetensors")
    assert info.head == "heatmap" and info.recipe["model_kwargs"]["heatmap_decode"] == "soft"
    for (k, a), b in zip(reg.trunk.named_parameters(), hm.trunk.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=k)


def test_set_indexes_lists_of_sources(tmp_path):
    path = tiny_config(tmp_path)
    cfg = load_config(path, {"data.train.0.repeat": 3})  # a bare FORMAT:PATH source becomes {spec, repeat}
    assert cfg.data.train[0].repeat == 3 and cfg.data.train[0].spec.startswith("300w:")
    with pytest.raises(ConfigError, match="not an index of a list of 1"):
        load_config(path, {"data.train.1.repeat": 3})
    more = load_config(path, {"data.train.1": {"spec": cfg.data.train[0].spec, "repeat": 0}})  # one past the end: appended
    assert len(more.data.train) == 2 and more.data.train[1].repeat == 0
    with pytest.raises(ConfigError, match="not an index of a list of 1"):
        load_config(path, {"data.train.2": "300w:x"})


def test_source_labels_tell_apart_folders_of_the_same_name():
    from facepoints.training.loop import source_labels

    got = source_labels(["300w:/d/300w/helen/trainset", "300w:/d/300w/lfpw/trainset", "300w:/d/300w/afw",
                         "ytf:/d/ytf68/a.csv"])
    assert list(got.values()) == ["300w:helen/trainset", "300w:lfpw/trainset", "300w:afw", "ytf:a.csv"]


def test_validation_reports_each_source_and_yaw_bucket(tmp_path):
    import torch

    from facepoints.data.crop_cache import build_cache
    from facepoints.schemes import get_scheme
    from facepoints.training.loop import validate, yaw_buckets

    cfg = load_config(tiny_config(tmp_path), {"data.val_fraction": 0.0})
    samples = make_splits(cfg).train.samples
    scheme = get_scheme("ibug68")
    cache = build_cache(make_splits(cfg).train, 48, 1.25, cache_dir=None, progress=False)
    yaws = yaw_buckets(samples, scheme)
    assert set(yaws) <= {"yaw 0-15", "yaw 15-30", "yaw 30-45", "yaw 45+"} and yaws[0]
    sources = ["300w:/x/a"] * 6 + ["300w:/y/a"] * 6

    class Answer(torch.nn.Module):  # a "model" that answers the labels, except on one source
        def forward(self, x):
            return self.out[: len(x)]

    net = Answer()
    net.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))
    o = (cache.size - 48) // 2
    truth = torch.from_numpy((cache.points - o) / 47).float()
    net.out = truth.clone()
    net.out[6:] += 0.05  # the second source is off by 5 % of the crop
    got = validate(net, cache, scheme, 48, sources, yaws)
    assert got["val_nme_io[300w:x/a]"] == pytest.approx(0.0, abs=1e-3) and got["val_n[300w:x/a]"] == 6
    assert got["val_nme_io[300w:y/a]"] > 1.0
    assert sum(got[k] for k in got if k.startswith("val_n[yaw")) == 12


def test_resume_refuses_a_changed_config_and_says_what_differs(tmp_path):
    from facepoints.training.loop import ResumeError

    path = tiny_config(tmp_path, max_steps=1)
    train(load_config(path), progress=False)
    for change, said in [({"model.input_size": 40}, "model.input_size: 48 -> 40"), ({"optim.lr": 0.01}, "optim.lr"),
                         ({"loss.name": "l2"}, "loss.name: 'l1' -> 'l2'"), ({"data.val_fraction": 0.5}, "data.val_fraction")]:
        with pytest.raises(ResumeError, match=said):
            train(load_config(path, change), resume=True, progress=False)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["input_size"] == 48  # the run's config is the one it started with
    # a key added to the config classes after the run started reads as its default: no difference
    import torch

    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    del ckpt["config"]["optim"]["trust_only"], ckpt["config"]["augment"]["occluder_photos"]
    torch.save(ckpt, tmp_path / "run" / "last.pt")
    # where it writes and how many threads it uses may change
    train(load_config(path, {"threads": 2, "max_steps": None}), resume=True, progress=False)
    assert [json.loads(x)["epoch"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resume_of_a_finished_run_or_of_nothing_says_so(tmp_path):
    from facepoints.training.loop import ResumeError

    path = tiny_config(tmp_path, optim={"batch_size": 4, "epochs": 1, "lr": 0.001})
    train(load_config(path), progress=False)
    with pytest.raises(ResumeError, match=r"already finished \(1 of 1 epochs\)"):
        train(load_config(path), resume=True, progress=False)
    with pytest.raises(ResumeError, match="nothing to resume"):
        train(load_config(path, {"output": str(tmp_path / "other")}), resume=True, progress=False)
    assert not (tmp_path / "other").exists()


def test_checkpoints_written_before_the_config_went_into_them_still_resume(tmp_path):
    """The old layout (no config or architecture in last.pt): the run's config.yaml is
    what the resumed config is checked against."""
    import torch

    from facepoints.training.loop import ResumeError

    path = tiny_config(tmp_path, max_steps=1)
    train(load_config(path), progress=False)
    ck_path = tmp_path / "run" / "last.pt"
    ck = torch.load(ck_path, weights_only=True)
    assert ck["config"]["model"]["input_size"] == 48 and ck["architecture"]["backbone"] == "mobilenet_v3_small"
    del ck["config"], ck["architecture"]
    torch.save(ck, ck_path)
    with pytest.raises(ResumeError, match="model.input_size"):
        train(load_config(path, {"model.input_size": 40}), resume=True, progress=False)
    train(load_config(path, {"max_steps": None}), resume=True, progress=False)
    assert load_model(tmp_path / "run" / "final.safetensors")[1].metrics["epoch"] == 2


def test_train_cli_refuses_an_unknown_backbone_before_reading_data(tmp_path):
    from typer.testing import CliRunner

    from facepoints.cli import app

    path = tiny_config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["train"] = ["300w:/no/such/folder"]  # would fail later, if data came first
    cfg["model"]["backbone"] = "resnet9"
    path.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(app, ["train", str(path), "--no-progress"])
    assert r.exit_code == 2 and "unknown backbone 'resnet9'" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["train", str(tiny_config(tmp_path)), "--resume", "--no-progress"])
    assert r.exit_code == 2 and "nothing to resume" in r.output


def test_every_path_in_a_config_file_is_relative_to_it(tmp_path, monkeypatch):
    """File paths resolve against the file's folder, command-line paths against the
    working directory; both end up absolute."""
    data = write_300w_folder(tmp_path / "faces", n=4)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "c.yaml").write_text(yaml.safe_dump({
        "output": "../runs/a", "data": {"train": [{"spec": "300w:../faces"}], "val": ["300w:../faces"],
                                        "exclude": "../skip.txt", "cache_dir": "../cache"},
        "model": {"init_from": "../m.safetensors"}, "distill": {"teacher": "../t.safetensors"}}))
    monkeypatch.chdir(tmp_path / "faces")  # anywhere else
    cfg = load_config(tmp_path / "cfg" / "c.yaml", {"data.val": ["300w:."], "model.init_from": "x.safetensors"})
    assert cfg.output == str(tmp_path / "runs" / "a") and cfg.data.train[0].spec == f"300w:{data}"
    assert cfg.data.exclude == str(tmp_path / "skip.txt") and cfg.data.cache_dir == str(tmp_path / "cache")
    assert cfg.distill.teacher == str(tmp_path / "t.safetensors")
    assert cfg.data.val == [f"300w:{data}"] and cfg.model.init_from == str(data / "x.safetensors")  # from the cwd


def test_a_run_started_with_relative_paths_resumes(tmp_path, monkeypatch):
    """config.yaml of a run from before paths were made absolute (relative to the working
    directory) matches the same config loaded now."""
    import torch

    monkeypatch.chdir(tmp_path)
    path = tiny_config(tmp_path, max_steps=1)
    train(load_config(path), progress=False)
    run = tmp_path / "run"
    old = yaml.safe_load((run / "config.yaml").read_text())
    old["output"] = "run"
    old["data"]["train"][0]["spec"] = "300w:faces"
    old["data"]["cache_dir"] = "cache"
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    ck = torch.load(run / "last.pt", weights_only=True)
    del ck["config"]
    torch.save(ck, run / "last.pt")
    train(load_config(path, {"max_steps": None}), resume=True, progress=False)
    assert (run / "final.safetensors").is_file()


def test_unknown_keys_are_answered_with_the_nearest_valid_key(tmp_path):
    path = tiny_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["data"]["val_fracton"] = 0.2
    raw["model"]["lr"] = 0.01
    raw["optim"]["epohcs"] = 3
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "data.val_fracton: unknown key; did you mean `data.val_fraction`?" in msg
    assert "model.lr: unknown key; did you mean `optim.lr`?" in msg
    assert "optim.epohcs: unknown key; did you mean `optim.epochs`?" in msg


def test_a_config_on_a_base_merges_sections_and_applies_its_set(tmp_path):
    base = tiny_config(tmp_path)
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "child.yaml").write_text(yaml.safe_dump({
        "base": "../tiny.yaml", "name": "child", "output": "out",
        "model": {"input_size": 40}, "set": {"optim.lr": 0.002, "model.init_from": "default"}}))
    child, parent = load_config(sub / "child.yaml"), load_config(base)
    assert child.name == "child" and child.model.input_size == 40 and child.optim.lr == 0.002
    assert child.model.backbone == parent.model.backbone and child.optim.epochs == parent.optim.epochs
    assert child.data.train == parent.data.train                       # paths relative to the base's own folder
    assert child.output == str((sub / "out").resolve())               # and the child's to its own
    assert child.model.init_from == "default"                         # a bundled model by name, as --model takes it
    # a source appended by set: its spec is relative to the child's folder, as if written there
    spec = child.data.train[0].spec if not isinstance(child.data.train[0], str) else child.data.train[0]
    fmt, _, where = spec.partition(":")
    (sub / "more.yaml").write_text(yaml.safe_dump({
        "base": "child.yaml", "set": {f"data.train.{len(parent.data.train)}": {"spec": f"{fmt}:extra", "repeat": 3}}}))
    more = load_config(sub / "more.yaml")
    assert more.data.train[:-1] == parent.data.train
    assert more.data.train[-1].spec == f"{fmt}:{(sub / 'extra').resolve()}" and more.data.train[-1].repeat == 3
    (sub / "loop.yaml").write_text(yaml.safe_dump({"base": "loop.yaml"}))
    with pytest.raises(ConfigError, match="include each other"):
        load_config(sub / "loop.yaml")


def test_init_from_a_bundled_model_by_name(tmp_path):
    cfg = load_config(tiny_config(tmp_path, model={"backbone": "mobilenet_v2", "head": "pip", "input_size": 64,
                                                   "init_from": "default"},
                                  optim={"batch_size": 4, "epochs": 1, "lr": 0.0005}))
    assert cfg.model.init_from == "default"
    model, _ = load_model(train(cfg, progress=False))
    from facepoints.models.package import load_model as lm

    bundled, _ = lm("default")
    # the trunk started from the bundled default's and moved only a little in one short epoch
    a = dict(model.trunk.named_parameters())["0.0.weight"]
    b = dict(bundled.trunk.named_parameters())["0.0.weight"]
    assert float((a - b).abs().mean()) < 0.05 * float(b.abs().mean())
