"""Reliability and safety: bad images, bad annotations, untrusted model files, and
property-based fuzzing of the readers. Everything is generated here in tmp_path."""

from __future__ import annotations

import csv
import io
import json
import pickle
import shutil
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from facepoints.cli import app
from facepoints.data.formats import check_in_image, read_dataset, read_pts, write_csv, write_pts, write_ytf
from facepoints.data.images import ImageError, image_size, read_image
from facepoints.data.samples import AnnotationError, Dataset, Sample
from facepoints.models.network import build_model
from facepoints.models.package import ModelFileError, ModelInfo, load_checkpoint, load_model, save_model
from facepoints.schemes import IBUG68
from conftest import EXAMPLES
from helpers import draw_face, synthetic_face_shape, write_300w_folder

runner = CliRunner()
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# --------------------------------------------------------------------------- bad images


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(w: int, h: int) -> bytes:
    """A valid PNG header declaring w x h RGB pixels, with a tiny IDAT (a few hundred bytes)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + _png_chunk(b"IEND", b""))


def noise(h=40, w=60, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _jpeg_bytes() -> bytes:
    return cv2.imencode(".jpg", noise())[1].tobytes()


def _png_bytes() -> bytes:
    return cv2.imencode(".png", noise())[1].tobytes()


# name -> writer(path). All are unreadable: read_image must raise ImageError naming them.
UNREADABLE = {
    "empty.jpg": lambda p: p.write_bytes(b""),
    "truncated_half.jpg": lambda p: p.write_bytes(_jpeg_bytes()[: len(_jpeg_bytes()) // 2]),
    "truncated_header.jpg": lambda p: p.write_bytes(_jpeg_bytes()[:20]),
    "truncated_half.png": lambda p: p.write_bytes(_png_bytes()[: len(_png_bytes()) // 2]),
    "truncated_header.png": lambda p: p.write_bytes(_png_bytes()[:30]),
    "text.jpg": lambda p: p.write_text("this is not an image, just text named .jpg\n"),
    "bomb_30000.png": lambda p: p.write_bytes(bomb_png(30000, 30000)),  # over PIL's own hard limit
    "bomb_10000.png": lambda p: p.write_bytes(bomb_png(10000, 10000)),  # PIL only warns
    "bomb_8000.png": lambda p: p.write_bytes(bomb_png(8000, 8000)),  # only our MAX_PIXELS refuses it
}


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_images_raise_image_error_naming_the_file(name, tmp_path, monkeypatch):
    p = tmp_path / name
    UNREADABLE[name](p)
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1) or real_load(self))
    t = time.perf_counter()
    with pytest.raises(ImageError) as e:
        read_image(p)
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg
    if name.startswith("bomb"):
        assert "decompression bomb" in msg and not decoded  # refused from the header, nothing decoded
        assert "over the limit of 50,000,000" in msg  # our limit, also where PIL's own fired first
        assert time.perf_counter() - t < 1.0
    if name == "empty.jpg":
        assert "empty" in msg
    # the same bytes given in memory are refused the same way, under the given name
    with pytest.raises(ImageError, match="upload.jpg"):
        read_image(p.read_bytes(), name="upload.jpg")


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    k = np.arange(256, dtype=np.uint16).reshape(16, 16)
    cv2.imwrite(str(tmp_path / "g16.png"), k * 257)  # full 16-bit range: 257 * k -> k
    a = read_image(tmp_path / "g16.png")
    assert a.dtype == np.uint8 and a.shape == (16, 16, 3)
    np.testing.assert_array_equal(a[..., 0], k)
    np.testing.assert_array_equal(a[..., 0], a[..., 2])
    # a dark 16-bit image stays dark (values 0..255 of 65535 are all near black)
    cv2.imwrite(str(tmp_path / "dark16.png"), k)
    assert read_image(tmp_path / "dark16.png").max() <= 1
    # 16-bit colour: channel order and scale
    bgr = np.zeros((8, 8, 3), np.uint16)
    bgr[:] = (50 * 257, 100 * 257, 200 * 257)
    cv2.imwrite(str(tmp_path / "c16.png"), bgr)
    assert (read_image(tmp_path / "c16.png") == (200, 100, 50)).all()


def test_grayscale_rgba_cmyk_become_rgb(tmp_path):
    cv2.imwrite(str(tmp_path / "gray.jpg"), np.full((30, 50), 77, np.uint8))
    g = read_image(tmp_path / "gray.jpg")
    assert g.shape == (30, 50, 3) and g.dtype == np.uint8 and abs(int(g.mean()) - 77) <= 1
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()

    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[:, :15] = (255, 0, 0, 128)  # half-transparent red over white -> pink
    rgba[:, 15:] = (0, 0, 255, 0)  # fully transparent -> white, whatever its colour
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    a = read_image(tmp_path / "rgba.png")
    assert a.shape == (20, 30, 3)
    np.testing.assert_allclose(a[0, 0], (255, 127, 127), atol=1)
    assert (a[:, 15:] == 255).all()

    Image.new("CMYK", (50, 30), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red in CMYK
    c = read_image(tmp_path / "cmyk.jpg")
    assert c.shape == (30, 50, 3) and c.dtype == np.uint8
    np.testing.assert_allclose(c.reshape(-1, 3).mean(0), (255, 0, 0), atol=3)


def write_exif_rotated(path: Path) -> None:
    """Stored 60 wide x 40 high, a bright dot at stored (x=6, y=6), EXIF orientation 6
    (viewers rotate it 90 degrees clockwise): the user sees 40 x 60 with the dot at the top right."""
    a = np.zeros((40, 60, 3), np.uint8)
    a[4:9, 4:9] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(path, exif=exif.tobytes(), quality=95)


def test_exif_rotation_is_applied(tmp_path):
    p = tmp_path / "rotated.jpg"
    write_exif_rotated(p)
    a = read_image(p)
    assert a.shape == (60, 40, 3)
    y, x = np.unravel_index(np.argmax(a.sum(2)), a.shape[:2])
    # stored (x, y) -> seen (H - 1 - y, x) = (33, 6)
    assert abs(x - 33) <= 2 and abs(y - 6) <= 2
    assert image_size(p) == (40, 60)  # width, height as seen, without decoding


@given(data=st.binary(max_size=300) | st.sampled_from(["png", "jpg", "bmp", "gif", "tiff", "webp"]).flatmap(
    lambda ext: st.tuples(st.just(ext), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
                          st.integers(0, 10_000))))
@FUZZ
def test_fuzz_read_image_bytes(data):
    """Random bytes, and valid small images with bytes flipped and cut: an RGB uint8
    array or ImageError, nothing else."""
    if not isinstance(data, bytes):
        ext, flips, cut = data
        buf = io.BytesIO()
        Image.fromarray(noise(12, 10, seed=1)).save(buf, format={"jpg": "JPEG"}.get(ext, ext.upper()))
        b = bytearray(buf.getvalue())
        for i, v in flips:
            b[i % len(b)] = v
        data = bytes(b[: max(1, len(b) - cut)])
    try:
        a = read_image(data, name="fuzz.bin")
    except ImageError as e:
        assert "fuzz.bin" in str(e) and "\n" not in str(e)
        return
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and a.flags.c_contiguous


# --------------------------------------------------------------------------- the CLI on a folder of good and bad images


def tiny_model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_model(build_model("mobilenet_v3_small", 68).eval(),
               ModelInfo(scheme=IBUG68.to_dict(), backbone="mobilenet_v3_small", head="regression",
                         input_size=64, crop_scale=1.25), path)
    return path


def write_readable_odd_images(folder: Path) -> list[str]:
    cv2.imwrite(str(folder / "deep16.png"), (np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50))
    cv2.imwrite(str(folder / "gray.jpg"), np.full((30, 40), 77, np.uint8))
    Image.new("RGBA", (40, 30), (255, 0, 0, 128)).save(folder / "rgba.png")
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    write_exif_rotated(folder / "rotated.jpg")
    return ["deep16.png", "gray.jpg", "rgba.png", "cmyk.jpg", "rotated.jpg"]


def test_predict_cli_continues_past_bad_images(tmp_path):
    model = tiny_model(tmp_path)
    folder = tmp_path / "photos"
    folder.mkdir()
    good = sorted(EXAMPLES.glob("*.jpg"))[:2]
    for p in good:
        shutil.copy(p, folder / p.name)
    readable = [p.name for p in good] + write_readable_odd_images(folder)
    for name, write in UNREADABLE.items():
        write(folder / name)
    cv2.imwrite(str(folder / "one_pixel.png"), np.zeros((1, 1, 3), np.uint8))  # readable, too small to search
    r = runner.invoke(app, ["predict", str(folder), "--json", "--model", str(model)])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    records = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert sorted(Path(rec["image"]).name for rec in records) == sorted(readable)
    sizes = {Path(rec["image"]).name: (rec["width"], rec["height"]) for rec in records}
    assert sizes["rotated.jpg"] == (40, 60) and sizes["gray.jpg"] == (40, 30) and sizes["astronaut.jpg"] == (512, 512)
    for rec in records:
        assert rec["scheme"] == "ibug68"
        assert all(len(f["landmarks"]) == 68 for f in rec["faces"])
    assert any(rec["faces"] for rec in records if Path(rec["image"]).name == "astronaut.jpg")
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(UNREADABLE) + 1
    for name in [*UNREADABLE, "one_pixel.png"]:
        assert sum(str(folder / name) + ":" in e for e in errors) == 1, name
    assert any("one_pixel.png: image of shape (1, 1, 3) is too small" in e for e in errors)
    n_bad, n_all = len(UNREADABLE) + 1, len(readable) + len(UNREADABLE) + 1
    assert f"{n_bad} of {n_all} image(s) could not be read" in r.stderr


@pytest.mark.parametrize("as_json", [False, True])
def test_evaluate_cli_reports_a_truncated_image(as_json, tmp_path):
    model = tiny_model(tmp_path)
    data = write_300w_folder(tmp_path / "ds", n=3)
    bad = data / "face001_1.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    r = runner.invoke(app, ["evaluate", f"300w:{data}", "--model", str(model)] + (["--json"] if as_json else []))
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0]
    if as_json:
        s = json.loads(r.stdout)
        assert s["n"] == 2 and s["n_total"] == 3 and s["n_missed"] == 1
        assert len(s["unreadable_images"]) == 1 and str(bad) in s["unreadable_images"][0]
    else:
        assert "2 faces" in r.stdout and "1 missed" in r.stdout


# --------------------------------------------------------------------------- bad annotations


def make_dataset(tmp_path: Path, fmt: str, n_samples: int = 3) -> tuple[Path, list[str]]:
    """``n_samples`` images with 68 points in ``fmt`` (300w, ytf, csv); returns the
    path to read and the names of the images."""
    names = [f"img{i}.jpg" for i in range(n_samples)]
    samples = []
    for i, name in enumerate(names):
        pts = synthetic_face_shape(seed=i)
        cv2.imwrite(str(tmp_path / name), draw_face(pts))
        samples.append(Sample(tmp_path / name, pts, name))
    ds = Dataset("made", IBUG68, samples)
    if fmt == "300w":
        for s in samples:
            write_pts(s.landmarks, tmp_path / Path(s.id).with_suffix(".pts"))
        return tmp_path, names
    path = tmp_path / "ann.csv"
    (write_ytf if fmt == "ytf" else write_csv)(ds, path)
    return path, names


def edit_line(path: Path, lineno: int, fn) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("\n".join(lines) + "\n")


def set_field(k: int, value: str):
    """Replace the k-th field of a CSV line, or the k-th number of a .pts point line."""
    def fn(line: str) -> str:
        sep = "," if "," in line else " "
        parts = line.split(sep)
        parts[k] = value
        return sep.join(parts)
    return fn


BAD_VALUES = {"nan": "nan", "inf": "inf", "-inf": "-inf", "text": "12px", "empty": "", "huge": "1e39"}


@pytest.mark.parametrize("fmt", ["300w", "ytf", "csv"])
@pytest.mark.parametrize("how", sorted(BAD_VALUES) + ["too_few", "too_many"])
def test_bad_values_name_file_and_line(fmt, how, tmp_path):
    path, _ = make_dataset(tmp_path, fmt)
    if fmt == "300w":
        file, line = path / "img1.pts", 4 + 10  # point 10 of the second sample
        if how == "too_few":
            edit_line(file, line, lambda s: "")  # 67 points listed, n_points says 68
            line = 2
        elif how == "too_many":
            edit_line(file, line, lambda s: s + "\n1.0 2.0")
            line = 2
        elif how == "empty":
            edit_line(file, line, set_field(0, ""))  # " 12.0": one number on the line
        else:
            edit_line(file, line, set_field(1, BAD_VALUES[how]))
    else:
        file, line = path, 3  # the second sample
        if how == "too_few":
            edit_line(file, line, lambda s: s.rsplit(",", 1)[0])
        elif how == "too_many":
            edit_line(file, line, lambda s: s + ",1.5")
        else:
            edit_line(file, line, set_field(21, BAD_VALUES[how]))
    with pytest.raises(AnnotationError) as e:
        read_dataset(f"{fmt}:{path}")
    assert e.value.path == str(file) and e.value.line == line
    assert str(e.value).startswith(f"{file}:{line}: ") and "\n" not in str(e.value)


@pytest.mark.parametrize("fmt", ["ytf", "csv"])
def test_duplicated_image_names_name_both_lines(fmt, tmp_path):
    path, names = make_dataset(tmp_path, fmt)
    edit_line(path, 4, lambda s: s.replace(names[2], names[0], 1))  # line 4 repeats line 2's image
    with pytest.raises(AnnotationError, match="duplicated image name") as e:
        read_dataset(f"{fmt}:{path}")
    assert e.value.path == str(path) and e.value.line == 4
    assert f"{path}:2" in str(e.value) and repr(names[0]) in str(e.value)


@pytest.mark.parametrize("fmt", ["300w", "ytf", "csv"])
def test_missing_images_are_errors_or_counted_warnings(fmt, tmp_path):
    path, names = make_dataset(tmp_path, fmt)
    (tmp_path / names[1]).unlink()
    with pytest.raises(AnnotationError) as e:
        read_dataset(f"{fmt}:{path}")
    msg = str(e.value)
    assert "1 of 3 images are missing" in msg and "skip-missing" in msg
    source = f"{path}:3" if fmt != "300w" else str(tmp_path / "img1.pts")
    assert f"{tmp_path / names[1]} ({source})" in msg
    ds = read_dataset(f"{fmt}:{path}", skip_missing=True)
    assert [s.id for s in ds] == [names[0], names[2]]
    assert len(ds.warnings) == 1 and "1 of 3 images are missing" in ds.warnings[0] and names[1] in ds.warnings[0]


@pytest.mark.parametrize("fmt", ["300w", "ytf", "csv"])
def test_points_outside_the_image_are_read_and_can_be_checked(fmt, tmp_path):
    path, names = make_dataset(tmp_path, fmt)  # images are 200 wide, 220 high
    if fmt == "300w":
        edit_line(tmp_path / "img0.pts", 4, lambda s: "-9.0 5.0")  # slightly outside: x = -10
        edit_line(tmp_path / "img2.pts", 4 + 5, lambda s: "1001.0 5.0")  # far outside: x = 1000
        where = str(tmp_path / "img2.pts")
    else:
        edit_line(path, 2, set_field(1, "-10"))
        edit_line(path, 4, set_field(11, "1000"))  # x of point 5
        where = f"{path}:4"
    ds = read_dataset(f"{fmt}:{path}")
    assert ds.samples[0].landmarks[0, 0] == -10.0 and ds.samples[2].landmarks[5, 0] == 1000.0
    found = check_in_image(ds, margin=0.5)
    assert [s.id for s, _ in found] == [names[2]]
    assert found[0][1].startswith(f"{where}: ") and "point 5" in found[0][1] and "200x220" in found[0][1]
    assert check_in_image(ds, margin=5.0) == []


def test_check_in_image_uses_the_size_the_user_sees(tmp_path):
    write_exif_rotated(tmp_path / "r.jpg")  # seen as 40 wide x 60 high
    pts = np.array([[39.0, 59.0]] * 68, np.float32)
    ds = Dataset("r", IBUG68, [Sample(tmp_path / "r.jpg", pts, "r.jpg", source="r.csv:2")])
    assert check_in_image(ds, margin=0.0) == []
    ds.samples[0].landmarks[3] = (59.0, 39.0)
    assert [m for _, m in check_in_image(ds, margin=0.0)][0].startswith("r.csv:2: point 3")


# --------------------------------------------------------------------------- untrusted model files


def test_untrusted_model_files_raise_model_file_error(tmp_path):
    good = tiny_model(tmp_path)
    state = load_file(str(good))
    with safe_open(str(good), framework="pt") as f:
        meta = f.metadata()

    pt = tmp_path / "weights.pt"
    torch.save(state, pt)
    with pytest.raises(ModelFileError, match="not a facepoints model file"):
        load_model(pt)

    raw = good.read_bytes()
    for cut in (10, 2000, len(raw) // 2, len(raw) - 1):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(raw[:cut])
        with pytest.raises(ModelFileError) as e:
            load_model(bad)
        assert str(bad) in str(e.value)

    key = "head.fc.weight"
    tampered = dict(state, **{key: torch.zeros(state[key].shape[0] - 2, state[key].shape[1])})
    bad = tmp_path / "tampered.safetensors"
    save_file(tampered, str(bad), metadata=meta)
    with pytest.raises(ModelFileError, match="do not fit") as e:
        load_model(bad)
    assert key in str(e.value)

    nan = tmp_path / "nan.safetensors"
    save_file(dict(state, **{key: torch.full_like(state[key], float("nan"))}), str(nan), metadata=meta)
    with pytest.raises(ModelFileError, match=f"NaN or infinite values in {key}"):
        load_model(nan)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"conv.weight": torch.zeros(8, 3, 3, 3)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="without facepoints metadata"):
        load_model(foreign)


@pytest.mark.parametrize("change", ["backbone", "head", "scheme", "huge_scheme", "input_size", "crop_scale",
                                    "not_an_object", "model_kwargs"])
def test_tampered_metadata_raises_model_file_error(change, tmp_path):
    good = tiny_model(tmp_path)
    with safe_open(str(good), framework="pt") as f:
        info = json.loads(f.metadata()["facepoints"])
    if change == "backbone":
        info["backbone"] = "resnet9000"
    elif change == "head":
        info["head"] = "transformer"
    elif change == "scheme":
        info["scheme"] = {"name": "x"}
    elif change == "huge_scheme":
        info["scheme"] = {"name": "x", "num_points": 10**9}  # must not allocate a 2e9-output layer
    elif change == "input_size":
        info["input_size"] = 10**6  # would allocate terabyte crops at predict time
    elif change == "crop_scale":
        info["crop_scale"] = float("nan")
    elif change == "model_kwargs":
        info["recipe"] = {"model_kwargs": {"layers": 1000}}
    else:
        info = [info]
    bad = tmp_path / "meta.safetensors"
    save_file(load_file(str(good)), str(bad), metadata={"facepoints": json.dumps(info)})
    t = time.perf_counter()
    with pytest.raises(ModelFileError) as e:
        load_model(bad)
    assert time.perf_counter() - t < 10
    assert str(bad) in str(e.value)


class Evil:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickles_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    zipped = tmp_path / "evil.pt"
    torch.save({"state": Evil(marker)}, zipped)
    legacy = tmp_path / "evil_legacy.pt"
    legacy.write_bytes(pickle.dumps({"state": Evil(marker)}, protocol=2))
    assert not marker.exists()
    for p in (zipped, legacy):
        with pytest.raises(ModelFileError, match="holds code"):
            load_checkpoint(p)
        with pytest.raises(ModelFileError):
            load_model(p)
        r = runner.invoke(app, ["predict", str(EXAMPLES / "astronaut.jpg"), "--model", str(p)])
        assert r.exit_code == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.output
    assert not marker.exists()
    # the same pickle *is* live: a plain pickle.loads would have created the file
    pickle.loads(legacy.read_bytes())["state"].close()
    assert marker.exists()


# --------------------------------------------------------------------------- fuzzing the annotation readers

GOOD_NUMBER = st.floats(-1e4, 1e4).map(lambda v: f"{v:.3f}") | st.integers(-1000, 1000).map(str)
BAD_NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e39", "-1e400", "", " ", "1,5", "0x10", "1_0", "abc", "1e", "--1", "٣"]),
    st.text(max_size=8),
)


def _rarely(draw) -> bool:
    return draw(st.integers(0, 3)) == 0


def _numbers(draw, k: int) -> list[str]:
    """``k`` numbers as text; about one file in four has one bad field, so that whole
    files are often valid and the happy path is fuzzed too."""
    out = [draw(GOOD_NUMBER) for _ in range(k)]
    if k and _rarely(draw):
        out[draw(st.integers(0, k - 1))] = draw(BAD_NUMBER)
    return out


@st.composite
def pts_text(draw):
    n = draw(st.integers(-1, 1)) if _rarely(draw) else draw(st.integers(1, 5))
    k = draw(st.integers(0, 6)) if _rarely(draw) else max(n, 0)
    v = _numbers(draw, 2 * k)
    lines = [draw(st.sampled_from(["version: 1", "", "version 2"])), f"n_points: {n}", "{"]
    lines += [f"{v[2 * i]} {v[2 * i + 1]}" for i in range(k)]
    lines.append("}")
    if _rarely(draw):  # a random line somewhere
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=20)))
    return "\n".join(lines)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (d / name).write_bytes(b"")  # readers only check that images exist
    return d


def _check_points(arr: np.ndarray, n: int) -> None:
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32
    assert n >= 1 and arr.shape == (n, 2) and np.isfinite(arr).all()


@given(content=st.binary(max_size=400) | st.text(max_size=300) | pts_text())
@FUZZ
def test_fuzz_read_pts(content, fuzz_dir):
    p = fuzz_dir / "f.pts"
    if isinstance(content, str):
        p.write_bytes(content.encode("utf-8", "replace"))
    else:
        p.write_bytes(content)
    try:
        arr = read_pts(p)
    except AnnotationError as e:
        assert e.path == str(p) and "\n" not in str(e)
        return
    n = int([line for line in p.read_text(errors="replace").splitlines()
             if line.strip().lower().startswith("n_points")][-1].split(":", 1)[1])
    _check_points(arr, n)


NAME = st.sampled_from(["a.jpg", "gone.jpg", "", "x" * 300 + ".jpg", "a\x00.jpg", "../a.jpg", "a.jpg\n"]) | st.text(max_size=12)


@st.composite
def csv_text(draw, fmt):
    n = 0 if _rarely(draw) and _rarely(draw) else draw(st.integers(1, 3))
    if fmt == "ytf":
        header = [""] + [str(i) for i in range(2 * n)]
    else:
        header = ["image"] + [f"{c}{i}" for i in range(n) for c in "xy"]
    if _rarely(draw) and _rarely(draw):
        header = draw(st.permutations(header)) if draw(st.booleans()) else header + [draw(st.text(max_size=5))]
    good_names = not _rarely(draw)
    names = draw(st.lists(st.sampled_from(["a.jpg", "b.jpg", "c.jpg", "d.jpg"]) if good_names else NAME,
                          min_size=0 if _rarely(draw) else 1, max_size=4, unique=not _rarely(draw)))
    values = _numbers(draw, 2 * n * len(names))
    rows = [[name] + values[2 * n * i: 2 * n * (i + 1)] for i, name in enumerate(names)]
    if rows and _rarely(draw) and _rarely(draw):
        rows[-1] = rows[-1][:-1] if draw(st.booleans()) else rows[-1] + [draw(GOOD_NUMBER)]
    if _rarely(draw):
        rows.insert(draw(st.integers(0, len(rows))), [])
    buf = io.StringIO()
    csv.writer(buf).writerows([header] + rows)
    return buf.getvalue()


def _fuzz_reader(fmt, content, skip_missing, fuzz_dir):
    p = fuzz_dir / f"{fmt}.csv"
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "replace"))
    try:
        ds = read_dataset(f"{fmt}:{p}", skip_missing=skip_missing)
    except AnnotationError as e:
        assert e.path.startswith(str(p))
        return
    n = ds.scheme.num_points
    assert len(set(ds.ids())) == len(ds)
    for s in ds:
        _check_points(s.landmarks, n)
        assert s.image.is_file()


@given(content=csv_text("ytf") | st.text(max_size=200) | st.binary(max_size=200), skip_missing=st.booleans())
@FUZZ
def test_fuzz_read_ytf(content, skip_missing, fuzz_dir):
    _fuzz_reader("ytf", content, skip_missing, fuzz_dir)


@given(content=csv_text("csv") | st.text(max_size=200) | st.binary(max_size=200), skip_missing=st.booleans())
@FUZZ
def test_fuzz_read_csv(content, skip_missing, fuzz_dir):
    _fuzz_reader("csv", content, skip_missing, fuzz_dir)


# Inputs that once escaped as IndexError, SchemeError, UnicodeDecodeError, OSError or inf values.
EDGE_FILES = {
    "ytf_blank_line_after_header": ("ytf", b",0,1\n\na.jpg,1,2\n", None),
    "ytf_no_value_columns": ("ytf", b"name\na.jpg\n", "no landmark columns"),
    "ytf_not_utf8": ("ytf", b",0,1\n\xff\xfe.jpg,1,2\n", "not UTF-8"),
    "csv_not_utf8": ("csv", b"image,x0,y0\n\xe9.jpg,1,2\n", "not UTF-8"),
    "csv_name_too_long": ("csv", b"image,x0,y0\n" + b"x" * 300 + b".jpg,1,2\n", "1 of 1 images are missing"),
    "csv_beyond_float32": ("csv", b"image,x0,y0\na.jpg,1e39,2\n", "point 0 is not a finite number"),
    "300w_zero_points": ("300w", b"version: 1\nn_points: 0\n{\n}\n", "n_points must be at least 1"),
}


@pytest.mark.parametrize("case", sorted(EDGE_FILES))
def test_edge_files_found_by_fuzzing(case, fuzz_dir):
    fmt, content, error = EDGE_FILES[case]
    p = fuzz_dir / f"edge.{'pts' if fmt == '300w' else 'csv'}"
    p.write_bytes(content)
    if error is None:
        ds = read_dataset(f"{fmt}:{p}")
        np.testing.assert_array_equal(ds.samples[0].landmarks, [[1, 2]])
        return
    with pytest.raises(AnnotationError, match=error) as e:
        read_dataset(f"{fmt}:{p}")
    assert str(p) in str(e.value)


def test_fuzz_strategies_reach_the_happy_path(fuzz_dir):
    """The generated files are not all rejected: a valid one reads back exactly."""
    (fuzz_dir / "ok.csv").write_text("image,x0,y0,x1,y1\na.jpg,1.5,2,3,4e1\nb.jpg,-1,0,0.25,7\n")
    ds = read_dataset(f"csv:{fuzz_dir / 'ok.csv'}")
    np.testing.assert_array_equal(ds.samples[0].landmarks, [[1.5, 2], [3, 40]])
    (fuzz_dir / "ok.pts").write_text("version: 1\nn_points: 2\n{\n1 2\n3.5 4\n}\n")
    np.testing.assert_array_equal(read_pts(fuzz_dir / "ok.pts"), [[0, 1], [2.5, 3]])
