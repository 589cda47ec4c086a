"""Readers and writers of every dataset format, on small files written here, plus the
real data in ../shared/data where it is present."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from facepoints.data.formats import FORMATS, read_dataset, write_dataset, write_submission
from facepoints.data.samples import AnnotationError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))


def points(n: int, seed: int, integer: bool = False) -> np.ndarray:
    p = np.random.default_rng(seed).uniform(0, 100, (n, 2))
    return np.round(p) if integer else np.round(p, 2)


def fmt(v: float) -> str:
    return repr(float(v))


def near(a, b) -> None:
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- writing the formats by hand
# Each writer gets the folder, the image names and the points and returns the path
# to give the reader. For the corruption tests, ``where`` names the file, line, field
# separator and index of a coordinate field of the SECOND sample.


def w_300w(root, names, pts, boxes):
    for name, p in zip(names, pts):
        body = "\n".join(f"{fmt(x + 1)} {fmt(y + 1)}" for x, y in p)
        (root / name).with_suffix(".pts").write_text(f"version: 1\nn_points: {len(p)}\n{{\n{body}\n}}\n")
    return root


def w_ytf(root, names, pts, boxes):
    n = len(pts[0])
    lines = [",".join([""] + [str(i) for i in range(2 * n)])]
    lines += [",".join([name] + [fmt(v) for v in p.reshape(-1)]) for name, p in zip(names, pts)]
    (root / "kp.csv").write_text("\n".join(lines) + "\n")
    return root / "kp.csv"


def w_cuhk5(root, names, pts, boxes):
    lines = [" ".join([name] + [fmt(v) for v in p[:, 0]] + [fmt(v) for v in p[:, 1]]) for name, p in zip(names, pts)]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root / "train.txt"


WFLW_ATTRS = [[1, 0, 0, 1, 0, 1], [0, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0]]


def w_wflw(root, names, pts, boxes):
    lines = []
    for k, (name, p) in enumerate(zip(names, pts)):
        box = boxes[k] if boxes else [1, 2, 90, 95]
        lines.append(" ".join([fmt(v) for v in p.reshape(-1)] + [str(int(b)) for b in box]
                              + [str(a) for a in WFLW_ATTRS[k % 3]] + [name]))
    (root / "list_98pt.txt").write_text("\n".join(lines) + "\n")
    return root / "list_98pt.txt"


def w_contest(root, names, pts, boxes):
    n = len(pts[0])
    lines = ["\t".join(["file_name"] + [f"Point_M{i}_{c}" for i in range(n) for c in "XY"])]
    lines += ["\t".join([name] + [str(int(v)) for v in p.reshape(-1)]) for name, p in zip(names, pts)]
    (root / "landmarks.csv").write_text("\n".join(lines) + "\n")
    return root / "landmarks.csv"


def w_submission(root, names, pts, boxes):
    n = len(pts[0])
    lines = [",".join(["file_name"] + [f"Point_M{i}_{c}" for i in range(n) for c in "XY"])]
    lines += [",".join([name] + [fmt(v) for v in p.reshape(-1)]) for name, p in zip(names, pts)]
    (root / "submit.csv").write_text("\n".join(lines) + "\n")
    return root / "submit.csv"


def w_csv(root, names, pts, boxes):
    n = len(pts[0])
    head = ["image"] + [f"{c}{i}" for i in range(n) for c in "xy"] + (["box_x0", "box_y0", "box_x1", "box_y1"] if boxes else [])
    lines = [",".join(head)]
    for k, (name, p) in enumerate(zip(names, pts)):
        lines.append(",".join([name] + [fmt(v) for v in p.reshape(-1)] + ([fmt(b) for b in boxes[k]] if boxes else [])))
    (root / "faces.csv").write_text("\n".join(lines) + "\n")
    return root / "faces.csv"


def w_json(root, names, pts, boxes):
    samples = []
    for k, (name, p) in enumerate(zip(names, pts)):
        item = {"image": name, "landmarks": p.tolist()}
        if boxes:
            item["box"] = list(boxes[k])
        samples.append(item)
    (root / "faces.json").write_text(json.dumps({"scheme": None, "samples": samples}, indent=1))
    return root / "faces.json"


@dataclass
class Case:
    fmt: str
    n: int
    write: Callable
    scheme: str
    where: Callable | None = None  # (root, path) -> (file, line, sep, coordinate field) of sample 2
    image_dir: str = ""
    integer: bool = False
    has_box: bool = False


CASES = [
    Case("300w", 68, w_300w, "ibug68", lambda r, p: (r / "b.pts", 4, " ", 0)),
    Case("ytf", 68, w_ytf, "ibug68", lambda r, p: (p, 3, ",", 1)),
    Case("cuhk5", 5, w_cuhk5, "five", lambda r, p: (p, 2, " ", 1)),
    Case("wflw", 98, w_wflw, "wflw98", lambda r, p: (p, 2, " ", 0), has_box=True),
    Case("contest", 971, w_contest, "contest971", lambda r, p: (p, 3, "\t", 1), image_dir="images", integer=True),
    Case("submission", 971, w_submission, "contest971", lambda r, p: (p, 3, ",", 1)),
    Case("csv", 7, w_csv, "points7", lambda r, p: (p, 3, ",", 1), has_box=True),
    Case("json", 29, w_json, "cofw29", has_box=True),
]
IDS = [c.fmt for c in CASES]
NAMES = ["a.jpg", "b.jpg"]
BOXES = [[1, 2, 60, 70], [3, 4, 80, 90]]


def setup(case: Case, root: Path, names=NAMES, images=True):
    pts = [points(case.n, k, case.integer) for k in range(len(names))]
    path = case.write(root, names, pts, [BOXES[k % 2] for k in range(len(names))] if case.has_box else None)
    if images:
        for name in names:
            make_image(root / case.image_dir / name)
    return path, pts


def test_every_format_is_covered():
    assert set(FORMATS) == set(IDS)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_read_exact_values(case, tmp_path):
    path, pts = setup(case, tmp_path)
    ds = read_dataset(f"{case.fmt}:{path}")
    assert ds.scheme.name == case.scheme
    assert ds.ids() == NAMES
    assert ds.warnings == []
    for s, p, box in zip(ds.samples, pts, BOXES):
        assert s.landmarks.shape == (case.n, 2) and s.landmarks.dtype == np.float32
        near(s.landmarks, p)  # the .pts writer above adds 1: 1-based on disk
        assert s.image == tmp_path / case.image_dir / s.id and s.image.is_file()
        assert str(path) in s.source
        if case.has_box:
            near(s.box, box)


@pytest.mark.parametrize("case", [c for c in CASES if FORMATS[c.fmt].write], ids=[c.fmt for c in CASES if FORMATS[c.fmt].write])
def test_round_trip(case, tmp_path):
    path, _ = setup(case, tmp_path)
    ds = read_dataset(f"{case.fmt}:{path}")
    out = tmp_path / "out" if case.fmt == "300w" else tmp_path / ("again" + Path(path).suffix)
    write_dataset(ds, f"{case.fmt}:{out}")
    if case.fmt == "300w":  # .pts files are written next to where the images would be
        for name in NAMES:
            make_image(out / name)
    again = read_dataset(f"{case.fmt}:{out}")
    assert again.scheme == ds.scheme
    assert again.ids() == ds.ids()
    for a, b in zip(again.samples, ds.samples):
        assert a.image.resolve() == (out / b.id if case.fmt == "300w" else b.image).resolve()
        near(a.landmarks, b.landmarks)
        if case.has_box:
            near(a.box, b.box)
        assert a.attributes == b.attributes


def corrupt(case, root, path, how):
    file, line, sep, field = case.where(root, path)
    lines = file.read_text().splitlines()
    parts = lines[line - 1].split(sep)
    if how == "columns":
        parts = parts[:-1] if case.fmt != "wflw" else parts[:50] + parts[51:]
    else:
        parts[field] = {"text": "abc", "nan": "nan", "inf": "inf"}[how]
    lines[line - 1] = sep.join(parts)
    file.write_text("\n".join(lines) + "\n")
    return file, line


LINE_CASES = [c for c in CASES if c.where]


@pytest.mark.parametrize("how", ["columns", "text", "nan", "inf"])
@pytest.mark.parametrize("case", LINE_CASES, ids=[c.fmt for c in LINE_CASES])
def test_malformed_names_file_and_line(case, how, tmp_path):
    path, _ = setup(case, tmp_path)
    file, line = corrupt(case, tmp_path, path, how)
    with pytest.raises(AnnotationError) as e:
        read_dataset(f"{case.fmt}:{path}")
    assert f"{file}:{line}:" in str(e.value)
    assert e.value.line == line


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_missing_image(case, tmp_path):
    path, _ = setup(case, tmp_path)
    (tmp_path / case.image_dir / "b.jpg").unlink()
    with pytest.raises(AnnotationError, match="1 of 2 images are missing"):
        read_dataset(f"{case.fmt}:{path}")
    ds = read_dataset(f"{case.fmt}:{path}", skip_missing=True)
    assert ds.ids() == ["a.jpg"]
    assert len(ds.warnings) == 1 and "1 of 2" in ds.warnings[0] and "b.jpg" in ds.warnings[0]


# 300-W names files after their images (no duplicates possible); WFLW repeats an image
# once per face on it (tested below).
DUP_CASES = [c for c in CASES if c.fmt not in ("300w", "wflw")]


@pytest.mark.parametrize("case", DUP_CASES, ids=[c.fmt for c in DUP_CASES])
def test_duplicate_image_names(case, tmp_path):
    path, _ = setup(case, tmp_path, names=["a.jpg", "b.jpg", "a.jpg"])
    with pytest.raises(AnnotationError, match="duplicated image name") as e:
        read_dataset(f"{case.fmt}:{path}")
    assert str(path) in str(e.value)


@pytest.mark.parametrize("case", [c for c in CASES if c.fmt != "300w"], ids=[c.fmt for c in CASES if c.fmt != "300w"])
def test_scheme_must_match_point_count(case, tmp_path):
    path, _ = setup(case, tmp_path)
    wrong = "five" if case.n != 5 else "ibug68"
    with pytest.raises(AnnotationError, match="points but scheme") as e:
        read_dataset(f"{case.fmt}:{path}", scheme=wrong)
    assert str(path) in str(e.value)


def test_empty_annotation_file_is_an_error(tmp_path):
    (tmp_path / "t.txt").write_text("\n")
    with pytest.raises(AnnotationError, match="no annotations"):
        read_dataset(f"cuhk5:{tmp_path / 't.txt'}")


# --------------------------------------------------------------------------- format-specific behaviour


def test_300w_is_one_based_on_disk(tmp_path):
    (tmp_path / "x_1.pts").write_text("version: 1\nn_points: 5\n{\n1 1\n2 3\n10.5 20.25\n4 4\n5 5\n}\n")
    make_image(tmp_path / "x_1.png")
    ds = read_dataset(f"300w:{tmp_path}")
    near(ds.samples[0].landmarks[:3], [[0, 0], [1, 2], [9.5, 19.25]])
    assert ds.samples[0].image.name == "x_1.png" and ds.samples[0].group == "x"
    write_dataset(ds, f"300w:{tmp_path / 'out'}")
    assert "10.500 20.250" in (tmp_path / "out" / "x_1.pts").read_text()


def test_cuhk5_xs_then_ys_and_groups(tmp_path):
    (tmp_path / "t.txt").write_text("lfw/Ann_Lee_0001.jpg 1 2 3 4 5 11 12 13 14 15\n")
    make_image(tmp_path / "lfw" / "Ann_Lee_0001.jpg")
    ds = read_dataset(f"cuhk5:{tmp_path / 't.txt'}")
    near(ds.samples[0].landmarks, [[1, 11], [2, 12], [3, 13], [4, 14], [5, 15]])
    assert ds.samples[0].group == "lfw/Ann_Lee"
    write_dataset(ds, f"cuhk5:{tmp_path / 'w.txt'}")
    assert (tmp_path / "w.txt").read_text() == "lfw/Ann_Lee_0001.jpg 1 2 3 4 5 11 12 13 14 15\n"


def test_wflw_box_attributes_and_images_folder(tmp_path):
    ann = tmp_path / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    ann.mkdir(parents=True)
    names = ["7--Cheering/p1.jpg", "7--Cheering/p1.jpg", "9--Press/p2.jpg"]
    pts = [points(98, k) for k in range(3)]
    path = w_wflw(ann, names, pts, [[1, 2, 50, 60], [40, 41, 90, 95], [5, 6, 7, 8]])
    for name in set(names):
        make_image(tmp_path / "WFLW_images" / name)
    ds = read_dataset(f"wflw:{path}")
    assert ds.ids() == ["7--Cheering/p1.jpg", "7--Cheering/p1.jpg#2", "9--Press/p2.jpg"]
    a, b, c = ds.samples
    assert a.image == b.image == tmp_path / "WFLW_images" / "7--Cheering/p1.jpg"
    assert a.group == b.group == "7--Cheering/p1.jpg" != c.group
    near(b.box, [40, 41, 90, 95])
    assert b.attributes == {"pose": 0, "expression": 1, "illumination": 1, "make_up": 0, "occlusion": 1,
                            "blur": 0, "group": "7--Cheering/p1.jpg"}
    near(c.landmarks, pts[2])
    write_dataset(ds, f"wflw:{tmp_path / 'copy.txt'}")
    again = read_dataset(f"wflw:{tmp_path / 'copy.txt'}")
    assert [s.image.resolve() for s in again] == [s.image.resolve() for s in ds]
    near(again.samples[1].box, b.box)
    assert (tmp_path / "copy.txt").read_text().splitlines()[0].endswith(" 1 2 50 60 1 0 0 1 0 1 WFLW_images/7--Cheering/p1.jpg")


def test_wflw_writer_needs_98_points(tmp_path):
    path, _ = setup(CASES[2], tmp_path)  # cuhk5, 5 points
    ds = read_dataset(f"cuhk5:{path}")
    with pytest.raises(ValueError, match="98 points"):
        write_dataset(ds, f"wflw:{tmp_path / 'w.txt'}")


def test_contest_images_beside_csv_and_header_required(tmp_path):
    pts = [points(971, 0, integer=True)]
    path = w_contest(tmp_path, ["0.jpg"], pts, None)
    make_image(tmp_path / "0.jpg")
    ds = read_dataset(f"contest:{path}")
    assert ds.samples[0].image == tmp_path / "0.jpg"
    near(ds.samples[0].landmarks, pts[0])
    # the writer keeps integer values as integers, TAB-separated
    write_dataset(ds, f"contest:{tmp_path / 'copy.csv'}")
    row = (tmp_path / "copy.csv").read_text().splitlines()[1].split("\t")
    assert row[0] == "0.jpg" and row[1] == str(int(pts[0][0, 0]))
    # no header: the first data row is not silently taken as one
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(AnnotationError, match="header") as e:
        read_dataset(f"contest:{path}")
    assert f"{path}:1:" in str(e.value)


def test_submission_subset_writer_and_partial_reader(tmp_path):
    path, pts = setup(CASES[4], tmp_path)  # contest, 971 points
    ds = read_dataset(f"contest:{path}")
    sub = tmp_path / "sub.csv"
    write_submission(ds, sub, point_indices=[0, 2, 970])
    lines = sub.read_text().splitlines()
    assert lines[0] == "file_name,Point_M0_X,Point_M0_Y,Point_M2_X,Point_M2_Y,Point_M970_X,Point_M970_Y"
    p = pts[1]
    assert lines[2].split(",") == ["b.jpg"] + [str(int(v)) for v in (p[0, 0], p[0, 1], p[2, 0], p[2, 1], p[970, 0], p[970, 1])]
    with pytest.raises(AnnotationError, match="partial submission") as e:
        read_dataset(f"submission:{sub}")
    assert f"{sub}:1:" in str(e.value)
    with pytest.raises(ValueError, match="outside"):
        write_submission(ds, sub, point_indices=[971])
    # all points by default; the reader finds the images in images/ beside it
    write_submission(ds, str(sub))
    back = read_dataset(f"submission:{sub}")
    assert back.scheme.name == "contest971" and back.ids() == NAMES
    near(back.samples[1].landmarks, p)


def test_submission_columns_in_any_order(tmp_path):
    (tmp_path / "s.csv").write_text("file_name,Point_M1_Y,Point_M0_X,Point_M1_X,Point_M0_Y\na.jpg,4,1,3,2\n")
    make_image(tmp_path / "a.jpg")
    ds = read_dataset(f"submission:{tmp_path / 's.csv'}")
    near(ds.samples[0].landmarks, [[1, 2], [3, 4]])
    (tmp_path / "s.csv").write_text("file_name,Point_M0_X,Point_M0_Y,Point_M1_X\na.jpg,1,2,3\n")
    with pytest.raises(AnnotationError, match="partial"):
        read_dataset(f"submission:{tmp_path / 's.csv'}")


def test_csv_header_checked_and_box_optional(tmp_path):
    f = tmp_path / "f.csv"
    f.write_text("image,x0,y0,x1,y1,x2,y2,x3,y3,x4,y4\nsub/a.jpg,1,2,3,4,5,6,7,8,9,10\n")
    make_image(tmp_path / "sub" / "a.jpg")
    ds = read_dataset(f"csv:{f}")
    assert ds.scheme.name == "five" and ds.samples[0].box is None and ds.ids() == ["sub/a.jpg"]
    near(ds.samples[0].landmarks, [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]])
    f.write_text("image,x0,y0,x1\na.jpg,1,2,3\n")
    with pytest.raises(AnnotationError, match="header") as e:
        read_dataset(f"csv:{f}")
    assert f"{f}:1:" in str(e.value)
    f.write_text("image,x0,y0,box_x0,box_y0\na.jpg,1,2,3,4\n")
    with pytest.raises(AnnotationError, match="header"):
        read_dataset(f"csv:{f}")


def test_json_scheme_name_and_malformed(tmp_path):
    f = tmp_path / "f.json"
    make_image(tmp_path / "a.jpg")
    sample = {"image": "a.jpg", "landmarks": points(5, 0).tolist()}
    f.write_text(json.dumps({"scheme": "five", "samples": [sample]}))
    ds = read_dataset(f"json:{f}")
    assert ds.scheme.name == "five" and ds.samples[0].box is None
    f.write_text(json.dumps({"scheme": "ibug68", "samples": [sample]}))
    with pytest.raises(AnnotationError, match="scheme 'ibug68'"):
        read_dataset(f"json:{f}")
    f.write_text('{"scheme": null,\n "samples": [\n  {"image": "a.jpg", "landmarks": [[1, 2],]}\n]}')
    with pytest.raises(AnnotationError, match="not valid JSON") as e:
        read_dataset(f"json:{f}")
    assert f"{f}:3:" in str(e.value)
    for bad, msg in [([[1, 2], [3]], r"\[x, y\] pairs"), ([[1, 2], ["a", 4]], "numbers"),
                     ([[1, 2], [float("nan"), 4]], "not a finite number")]:
        f.write_text(json.dumps({"samples": [sample, {"image": "b.jpg", "landmarks": bad}]}))
        with pytest.raises(AnnotationError, match=msg) as e:
            read_dataset(f"json:{f}")
        assert str(f) in str(e.value) and "samples[1]" in str(e.value)
    f.write_text(json.dumps({"samples": [sample, {"image": "b.jpg", "landmarks": [[1, 2]] * 6}]}))
    with pytest.raises(AnnotationError, match="samples\\[1\\]: 6 points"):
        read_dataset(f"json:{f}")


def test_write_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="FORMAT:PATH"):
        read_dataset(str(tmp_path))


# --------------------------------------------------------------------------- the real data, where present


def shared(rel: str) -> Path:
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"{p} not present")
    return p


def test_real_cuhk5():
    ds = read_dataset(f"cuhk5:{shared('cuhk5/new_training.txt')}")
    assert len(ds) == 10000 and ds.scheme.name == "five" and not ds.warnings
    pts = np.stack([s.landmarks for s in ds])
    assert pts.min() > -20 and pts.max() < 80  # a few points lie outside the 80x80 crops
    assert (pts[:, 0, 0] < pts[:, 1, 0]).mean() > 0.99  # left eye is on the image's left
    assert len(read_dataset(f"cuhk5:{shared('cuhk5/new_testing.txt')}")) == 2995


def test_real_300w_afw():
    ds = read_dataset(f"300w:{shared('300w/afw')}")
    assert len(ds) == 337 and ds.scheme.name == "ibug68" and not ds.warnings
    assert len({s.group for s in ds}) < 337  # several faces per photo share a group


def test_real_ytf():
    ds = read_dataset(f"ytf:{shared('ytf68/training_frames_keypoints.csv')}")
    assert len(ds) == 3462 and ds.scheme.name == "ibug68" and not ds.warnings
    assert ds.samples[0].image.parent.name == "training"


def test_300w_groups_faces_by_photo_and_lfpw_numbers_are_photos():
    from facepoints.data.formats import _photo_group

    assert _photo_group("1051618982_1") == _photo_group("1051618982_2") == "1051618982"  # AFW/HELEN: faces
    assert _photo_group("image_0001") == "image_0001" != _photo_group("image_0002")  # LFPW: photo numbers
