"""Dataset readers and writers, addressed on the command line as ``FORMAT:PATH``.

Each format registers a reader ``read(path, scheme, skip_missing) -> Dataset`` and,
where the format is also an output, a writer ``write(dataset, path)``.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from facepoints.data.images import IMAGE_SUFFIXES  # noqa: F401 (the folder scans' suffixes, re-exported)
from facepoints.data.samples import AnnotationError, Dataset, Sample, check_points, landmark_box, parse_floats
from facepoints.schemes import (BUILTIN, CONTEST971, FIVE, WFLW98, LandmarkScheme, get_scheme,
                                scheme_for_points)



@dataclass(frozen=True)
class Format:
    name: str
    read: Callable[..., Dataset]
    write: Callable[[Dataset, Path], None] | None
    help: str


FORMATS: dict[str, Format] = {}


def register(name: str, help: str, write=None):
    def deco(fn):
        FORMATS[name] = Format(name, fn, write, help)
        return fn

    return deco


def parse_spec(spec: str) -> tuple[str, Path]:
    """Split ``FORMAT:PATH``; a bare path is an error naming the formats."""
    m = re.match(r"^([A-Za-z0-9_-]+):(.+)$", spec)
    if not m or m.group(1).lower() not in FORMATS:
        raise ValueError(f"dataset {spec!r} must be FORMAT:PATH with FORMAT one of: {', '.join(sorted(FORMATS))}")
    return m.group(1).lower(), Path(m.group(2))


def read_dataset(spec: str, scheme: str | LandmarkScheme | None = None, skip_missing: bool = False,
                 corrections: bool = True) -> Dataset:
    """Read ``FORMAT:PATH``. Missing images raise unless ``skip_missing``, in which
    case they are left out and counted in ``Dataset.warnings``. Hand corrections in
    ``PATH.corrections.json`` (see ``facepoints.data.corrections``) are applied unless
    ``corrections`` is False: dropped samples are left out (counted in the warnings),
    fixed landmarks replace the annotated ones."""
    fmt, path = parse_spec(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (from {spec!r})")
    try:
        ds = FORMATS[fmt].read(path, get_scheme(scheme) if scheme is not None else None, skip_missing)
    except UnicodeDecodeError as e:
        raise AnnotationError(path, f"not UTF-8 text (byte {e.start}: {e.reason})") from None
    except csv.Error as e:
        raise AnnotationError(path, f"malformed CSV ({e})") from None
    if corrections:
        from facepoints.data.corrections import apply_corrections, load_corrections, sidecar_path

        side = sidecar_path(path)
        ds = apply_corrections(ds, load_corrections(side), side)
    return ds


def write_dataset(ds: Dataset, spec: str) -> None:
    fmt, path = parse_spec(spec)
    writer = FORMATS[fmt].write
    if writer is None:
        raise ValueError(f"format {fmt!r} can be read but not written")
    writer(ds, path)


def resolve_scheme(scheme: LandmarkScheme | None, num_points: int, path) -> LandmarkScheme:
    if num_points < 1:
        raise AnnotationError(path, "holds no landmark columns / points")
    if scheme is None:
        return scheme_for_points(num_points)
    if scheme.num_points != num_points:
        raise AnnotationError(path, f"has {num_points} points but scheme {scheme.name!r} has {scheme.num_points}")
    return scheme


def finish(name: str, scheme: LandmarkScheme, samples: list[Sample], skip_missing: bool) -> Dataset:
    """Check that every image exists; report the missing ones, never drop silently."""
    missing = [s for s in samples if not _is_file(s.image)]
    seen: dict[str, Sample] = {}
    for s in samples:
        if s.id in seen:
            extra = len(samples) - len({t.id for t in samples})
            m = re.fullmatch(r"(.*):(\d+)", s.source or name)
            where, line = (m.group(1), int(m.group(2))) if m else (s.source or name, None)
            raise AnnotationError(where, f"duplicated image name {s.id!r}, first at {seen[s.id].source or name} "
                                         f"({extra} repeated row(s) in all)", line)
        seen[s.id] = s
    warnings: list[str] = []
    if missing:
        listed = ", ".join(f"{s.image} ({s.source})" for s in missing[:3])
        msg = f"{len(missing)} of {len(samples)} images are missing, e.g. {listed}"
        if not skip_missing:
            raise AnnotationError(name, msg + " (pass skip_missing / --skip-missing to leave them out)")
        warnings.append(msg + "; left out")
        samples = [s for s in samples if _is_file(s.image)]
    return Dataset(name, scheme, samples, warnings)


def _is_file(p: Path) -> bool:
    """``Path.is_file`` that says False, not OSError, for names too long for the file system."""
    try:
        return p.is_file()
    except (OSError, ValueError):
        return False


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- 300-W


def read_pts(path: Path, scheme: LandmarkScheme | None = None) -> np.ndarray:
    """A 300-W ``.pts`` file: ``version: 1``, ``n_points: N``, ``{``, N lines ``x y``, ``}``.
    Its coordinates are 1-based; returned 0-based."""
    raw_bytes = Path(path).read_bytes()
    if raw_bytes[:2] in (b"\xff\xfe", b"\xfe\xff"):  # a UTF-16 byte-order mark
        raise AnnotationError(path, "the file is UTF-16 text; .pts files are plain ASCII/UTF-8 (re-save it as UTF-8)", 1)
    if raw_bytes[:3] == b"\xef\xbb\xbf":  # a UTF-8 byte-order mark
        raw_bytes = raw_bytes[3:]
    lines = raw_bytes.decode("utf-8", errors="replace").splitlines()
    n = n_line = None
    pts: list[float] = []
    opened = closed = False
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if line.lower().startswith("version"):
            continue
        if line.lower().startswith("n_points"):
            try:
                n, n_line = int(line.split(":", 1)[1]), lineno
            except (IndexError, ValueError):
                raise AnnotationError(path, f"bad n_points line {line[:80]!r}", lineno) from None
            if n < 1:
                raise AnnotationError(path, f"n_points must be at least 1, got {n}", lineno)
            continue
        if line == "{":
            opened = True
            continue
        if line == "}":
            closed = True
            continue
        if closed:
            raise AnnotationError(path, "text after the closing '}'", lineno)
        parts = line.split()
        if len(parts) != 2:
            raise AnnotationError(path, f"expected 'x y', got {line!r}", lineno)
        xy = parse_floats(parts, path, lineno)
        if not (np.abs(xy) <= np.finfo(np.float32).max).all():  # NaN, inf, beyond float32
            raise AnnotationError(path, f"{line!r} is not a finite point", lineno)
        pts.extend(xy)
    if n is None or not opened or not closed:
        raise AnnotationError(path, "not a .pts file (needs n_points, '{' and '}')")
    if len(pts) != 2 * n:
        raise AnnotationError(path, f"n_points is {n} but {len(pts) // 2} points are listed", n_line)
    arr = check_points(pts, n, path)
    return arr - 1.0


def write_pts(points: np.ndarray, path: Path) -> None:
    body = "\n".join(f"{x + 1:.3f} {y + 1:.3f}" for x, y in np.asarray(points, dtype=np.float64))
    Path(path).write_text(f"version: 1\nn_points: {len(points)}\n{{\n{body}\n}}\n")


def _find_image(stem_path: Path) -> Path:
    for suf in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
        p = stem_path.with_suffix(suf)
        if p.is_file():
            return p
    return stem_path.with_suffix(".jpg")


def _photo_group(stem: str) -> str:
    """300-W names faces ``PHOTO_K`` (K a face number, 1-2 digits): faces of one photo
    stay in one split. LFPW's ``image_0001`` is a photo number, not a face number."""
    return re.sub(r"_\d{1,2}$", "", stem)


def write_300w(ds: Dataset, path: Path) -> None:
    """Write one ``.pts`` per sample into folder ``path``, named after its image
    (images are not copied)."""
    path.mkdir(parents=True, exist_ok=True)
    for s in ds.samples:
        out = path / Path(s.id).with_suffix(".pts")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_pts(s.landmarks, out)


@register("300w", "folder (searched recursively) of NAME.jpg/png + NAME.pts files, or one .pts file",
          write=write_300w)
def read_300w(path: Path, scheme, skip_missing) -> Dataset:
    # .pts in any letter case (.PTS, .Pts): annotation tools write all of them
    files = sorted(f for f in path.rglob("*") if f.suffix.lower() == ".pts" and f.is_file()) if path.is_dir() else [path]
    if not files:
        raise AnnotationError(path, "no .pts files found")
    samples = []
    root = path if path.is_dir() else path.parent
    yaws = _name_table(root / "yaw.csv", 1)
    visible = _name_table(root / "visible.csv", None)
    for f in files:
        pts = read_pts(f)
        scheme = resolve_scheme(scheme, len(pts), f)
        img = _find_image(f.with_suffix(""))
        rel = img.relative_to(path) if path.is_dir() else Path(img.name)
        attributes = {"group": _photo_group(f.stem)}
        if f.stem in yaws:
            attributes["yaw"] = float(yaws[f.stem][0])
        if f.stem in visible:
            vis = np.array(visible[f.stem], np.float32)
            if len(vis) != len(pts):
                raise AnnotationError(root / "visible.csv", f"{f.stem}: {len(vis)} visibility flags for {len(pts)} points")
            attributes["visible"] = vis
        samples.append(Sample(img, pts, str(rel), source=str(f), attributes=attributes))
    return finish(str(path), scheme, samples, skip_missing)


def _name_table(path: Path, width: int | None) -> dict[str, list[float]]:
    """A sidecar CSV of a 300-W folder (``yaw.csv``: name, yaw in degrees; ``visible.csv``:
    name, one 0/1 per point): {image name without extension: its numbers}; {} when absent.
    ``width``: the number of values each row must have (None: any)."""
    if not path.is_file():
        return {}
    out: dict[str, list[float]] = {}
    with open(path, newline="") as fh:
        for line, row in enumerate(csv.reader(fh), 1):
            if line == 1 or not row:
                continue  # header
            name, values = Path(row[0]).stem, row[1:]
            try:
                nums = [float(v) for v in values]
            except ValueError:
                raise AnnotationError(path, f"not a number in {values!r}", line) from None
            if (width is not None and len(nums) != width) or not all(np.isfinite(nums)):
                raise AnnotationError(path, f"expected {width or 'finite'} number(s) after the name, got {values!r}", line)
            out[name] = nums
    return out


# --------------------------------------------------------------------------- YTF CSV


def _ytf_image_root(csv_path: Path, first_name: str | None) -> Path:
    """Images sit next to the CSV, or (the Udacity layout) in the folder named by the
    CSV's first word: ``training_frames_keypoints.csv`` -> ``training/``."""
    root = csv_path.parent
    if first_name is None or _exists(root / first_name):
        return root
    alt = root / csv_path.stem.split("_")[0]
    return alt if _exists(alt / first_name) else root


def _person(name: str) -> str:
    """YTF frames are ``Person_Name_NN.jpg``: the person is the name without ``_NN``."""
    return re.sub(r"_\d+$", "", Path(name).stem)


def write_ytf(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([""] + [str(i) for i in range(2 * ds.scheme.num_points)])
        for s in ds.samples:
            w.writerow([s.id] + [f"{v:.3f}" for v in s.landmarks.reshape(-1)])


@register("ytf", "CSV with a header row, then name,x0,y0,...; images beside it or in the folder named by its first word",
          write=write_ytf)
def read_ytf(path: Path, scheme, skip_missing) -> Dataset:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise AnnotationError(path, "empty CSV")
    body = rows[1:]
    ncols = len(rows[0]) - 1
    if ncols % 2:
        raise AnnotationError(path, f"header has {ncols} value columns; need an even number (x, y pairs)", 1)
    scheme = resolve_scheme(scheme, ncols // 2, path)
    first = next((row for row in body if row), None)
    root = _ytf_image_root(path, first[0] if first else None)
    samples = []
    for lineno, row in enumerate(body, 2):
        if not row:
            continue
        if len(row) != ncols + 1:
            raise AnnotationError(path, f"expected {ncols + 1} columns, got {len(row)}", lineno)
        pts = check_points(parse_floats(row[1:], path, lineno), scheme.num_points, path, lineno)
        samples.append(Sample(root / row[0], pts, row[0], source=f"{path}:{lineno}",
                              attributes={"group": _person(row[0])}))
    return finish(str(path), scheme, samples, skip_missing)


# --------------------------------------------------------------------------- helpers for the formats below


def _floats(tokens, path, lineno) -> np.ndarray:
    """Fast float parsing of many tokens; on failure the error names the bad token."""
    try:
        return np.asarray(tokens, dtype=np.float64)
    except ValueError:
        parse_floats(tokens, path, lineno)
        raise AnnotationError(path, "bad number", lineno) from None


def _num(v: float) -> str:
    """Compact number: ``12``, ``34.32`` (at most 3 decimals)."""
    return f"{v:.3f}".rstrip("0").rstrip(".")


def _image_root(candidates: list[Path], first_name: str | None) -> Path:
    """The first candidate folder holding the first image, else the first that exists."""
    for c in candidates:
        if first_name is not None and _exists(c / first_name):
            return c
    return next((c for c in candidates if c.is_dir()), candidates[-1])


def _rel(image: Path, folder: Path) -> str:
    """An image path written relative to the annotation file's folder."""
    return Path(os.path.relpath(Path(image).absolute(), Path(folder).absolute())).as_posix()


def _need_points(ds: Dataset, n: int, fmt: str) -> None:
    if ds.scheme.num_points != n:
        raise ValueError(f"format {fmt!r} holds {n} points; dataset {ds.name!r} has {ds.scheme.num_points}")


def _require_samples(samples: list, path: Path) -> None:
    if not samples:
        raise AnnotationError(path, "no annotations found")


def _read_delimited(path: Path, delimiter: str | None = None) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line number, row)`` pairs of a CSV; blank rows are skipped.
    Without ``delimiter``, TAB if the header has one, else comma."""
    with open(path, newline="") as fh:
        first = fh.readline()
        fh.seek(0)
        delim = delimiter or ("\t" if "\t" in first else ",")
        rdr = csv.reader(fh, delimiter=delim)
        header = next(rdr, None)
        if not header:
            raise AnnotationError(path, "empty file (needs a header row)", 1)
        rows = [(rdr.line_num, row) for row in rdr if row and any(c.strip() for c in row)]
    return [h.strip() for h in header], rows


# --------------------------------------------------------------------------- CUHK 5-point txt


def write_cuhk5(ds: Dataset, path: Path) -> None:
    _need_points(ds, 5, "cuhk5")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for s in ds.samples:
            vals = [*s.landmarks[:, 0], *s.landmarks[:, 1]]
            fh.write(" ".join([_rel(s.image, path.parent)] + [_num(v) for v in vals]) + "\n")


@register("cuhk5", "CUHK 5-point txt: lines 'relpath x1..x5 y1..y5' (eyes, nose, mouth corners); "
          "images relative to the txt", write=write_cuhk5)
def read_cuhk5(path: Path, scheme, skip_missing) -> Dataset:
    scheme = resolve_scheme(scheme or FIVE, 5, path)
    samples = []
    for lineno, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        parts = raw.split()
        if len(parts) != 11:
            raise AnnotationError(path, f"expected 'relpath x1..x5 y1..y5' (11 fields), got {len(parts)}", lineno)
        v = _floats(parts[1:], path, lineno)
        pts = check_points(np.stack([v[:5], v[5:]], axis=1), 5, path, lineno)
        rel = parts[0].replace("\\", "/")
        group = (Path(rel).parent / _person(rel)).as_posix()
        samples.append(Sample(path.parent / rel, pts, rel, source=f"{path}:{lineno}", attributes={"group": group}))
    _require_samples(samples, path)
    return finish(str(path), scheme, samples, skip_missing)


# --------------------------------------------------------------------------- WFLW txt

WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "make_up", "occlusion", "blur")


def write_wflw(ds: Dataset, path: Path) -> None:
    _need_points(ds, 98, "wflw")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for s in ds.samples:
            box = s.box if s.box is not None else landmark_box(s.landmarks)
            fields = [_num(v) for v in s.landmarks.reshape(-1)]
            fields += [str(int(round(float(v)))) for v in box]
            fields += [str(int(s.attributes.get(a, 0))) for a in WFLW_ATTRIBUTES]
            fh.write(" ".join(fields + [_rel(s.image, path.parent)]) + "\n")


@register("wflw", "WFLW txt: lines of 196 coordinates, box x0 y0 x1 y1, 6 attribute flags, image relpath; "
          "images relative to the txt or in a WFLW_images folder beside it", write=write_wflw)
def read_wflw(path: Path, scheme, skip_missing) -> Dataset:
    scheme = resolve_scheme(scheme or WFLW98, 98, path)
    n_fields = 196 + 4 + 6 + 1
    rows = []
    for lineno, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        parts = raw.split()
        if len(parts) != n_fields:
            raise AnnotationError(path, f"expected {n_fields} fields (196 coordinates, 4 box, 6 attributes, "
                                        f"image), got {len(parts)}", lineno)
        rows.append((lineno, parts))
    _require_samples(rows, path)
    here = path.parent
    roots = [d / "WFLW_images" for d in (here, here.parent, here.parent.parent)] + [here]
    root = _image_root([r for r in roots if r.is_dir()] or [here], rows[0][1][-1].replace("\\", "/"))
    samples, seen = [], {}
    for lineno, parts in rows:
        pts = check_points(_floats(parts[:196], path, lineno), 98, path, lineno)
        nums = _floats(parts[196:206], path, lineno)
        if not np.isfinite(nums).all() or (nums != np.round(nums)).any():
            raise AnnotationError(path, "box and attribute fields must be integers", lineno)
        rel = parts[-1].replace("\\", "/")
        seen[rel] = seen.get(rel, 0) + 1  # WFLW lists one line per face: an image may repeat
        sid = rel if seen[rel] == 1 else f"{rel}#{seen[rel]}"
        attrs = {a: int(v) for a, v in zip(WFLW_ATTRIBUTES, nums[4:])}
        attrs["group"] = rel
        samples.append(Sample(root / rel, pts, sid, source=f"{path}:{lineno}",
                              box=nums[:4].astype(np.float32), attributes=attrs))
    return finish(str(path), scheme, samples, skip_missing)


# --------------------------------------------------------------------------- thousand-landmarks contest


def _contest_header(n: int, indices=None) -> list[str]:
    idx = range(n) if indices is None else indices
    return ["file_name"] + [f"Point_M{i}_{c}" for i in idx for c in ("X", "Y")]


def _contest_root(path: Path, rows) -> Path:
    return _image_root([path.parent / "images", path.parent], rows[0][1][0] if rows else None)


def write_contest(ds: Dataset, path: Path) -> None:
    _need_points(ds, 971, "contest")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(_contest_header(ds.scheme.num_points))
        for s in ds.samples:
            w.writerow([s.id] + [_num(v) for v in s.landmarks.reshape(-1)])


@register("contest", "thousand-landmarks contest landmarks.csv: TAB-separated, header, then file_name and "
          "971 x,y pairs; images in images/ beside it, or beside it", write=write_contest)
def read_contest(path: Path, scheme, skip_missing) -> Dataset:
    header, rows = _read_delimited(path)
    ncols = len(header) - 1
    if ncols < 2 or ncols % 2 or not header[0].lower().startswith("file"):
        raise AnnotationError(path, f"header must be file_name then x,y column pairs; got {len(header)} columns", 1)
    scheme = resolve_scheme(scheme or CONTEST971, ncols // 2, path)
    _require_samples(rows, path)
    root = _contest_root(path, rows)
    samples = []
    for lineno, row in rows:
        if len(row) != ncols + 1:
            raise AnnotationError(path, f"expected {ncols + 1} columns, got {len(row)}", lineno)
        pts = check_points(_floats(row[1:], path, lineno), scheme.num_points, path, lineno)
        samples.append(Sample(root / row[0], pts, row[0], source=f"{path}:{lineno}"))
    return finish(str(path), scheme, samples, skip_missing)


def write_submission(ds: Dataset, path: Path, point_indices=None) -> None:
    """The contest's submission CSV: ``file_name,Point_M0_X,Point_M0_Y,...`` for the
    chosen point indices (all by default)."""
    n = ds.scheme.num_points
    idx = list(range(n)) if point_indices is None else [int(i) for i in point_indices]
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ValueError(f"point indices {bad[:5]} outside 0..{n - 1}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(_contest_header(n, idx))
        for s in ds.samples:
            w.writerow([s.id] + [_num(v) for v in s.landmarks[idx].reshape(-1)])


@register("submission", "contest submission CSV: file_name,Point_M0_X,Point_M0_Y,...; readable when it "
          "holds every point 0..N-1", write=write_submission)
def read_submission(path: Path, scheme, skip_missing) -> Dataset:
    header, rows = _read_delimited(path, ",")
    cols: dict[tuple[int, str], int] = {}
    for c, name in enumerate(header[1:], 1):
        m = re.fullmatch(r"Point_M(\d+)_([XY])", name, re.IGNORECASE)
        if not m or (int(m.group(1)), m.group(2).upper()) in cols:
            raise AnnotationError(path, f"column {c + 1} is {name!r}; expected Point_M<i>_X / _Y, each once", 1)
        cols[int(m.group(1)), m.group(2).upper()] = c
    found = sorted({i for i, _ in cols})
    n = len(found)
    if not n or found != list(range(n)) or len(cols) != 2 * n:
        raise AnnotationError(path, f"holds {n} point(s) (indices {found[:3]}..{found[-3:]}), not X and Y of "
                                    "every point 0..N-1: a partial submission cannot be read as a dataset", 1)
    scheme = resolve_scheme(scheme, n, path)
    order = [cols[i, c] for i in range(n) for c in ("X", "Y")]
    _require_samples(rows, path)
    root = _contest_root(path, rows)
    samples = []
    for lineno, row in rows:
        if len(row) != len(header):
            raise AnnotationError(path, f"expected {len(header)} columns, got {len(row)}", lineno)
        pts = check_points(_floats([row[c] for c in order], path, lineno), n, path, lineno)
        samples.append(Sample(root / row[0], pts, row[0], source=f"{path}:{lineno}"))
    return finish(str(path), scheme, samples, skip_missing)


# --------------------------------------------------------------------------- generic CSV and JSON

BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")


def write_csv(ds: Dataset, path: Path) -> None:
    n = ds.scheme.num_points
    with_box = any(s.box is not None for s in ds.samples)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image"] + [f"{c}{i}" for i in range(n) for c in "xy"] + (list(BOX_COLUMNS) if with_box else []))
        for s in ds.samples:
            box = ([_num(v) for v in s.box] if s.box is not None else [""] * 4) if with_box else []
            w.writerow([_rel(s.image, path.parent)] + [_num(v) for v in s.landmarks.reshape(-1)] + box)


@register("csv", "CSV with header image,x0,y0,...,xN-1,yN-1 [,box_x0,box_y0,box_x1,box_y1]; "
          "images relative to the CSV", write=write_csv)
def read_csv(path: Path, scheme, skip_missing) -> Dataset:
    header, rows = _read_delimited(path, ",")
    col = {name: c for c, name in enumerate(header)}
    n = sum(1 for h in header if re.fullmatch(r"x\d+", h))
    want = ["image"] + [f"{c}{i}" for i in range(n) for c in "xy"]
    has_box = any(b in col for b in BOX_COLUMNS)
    if has_box:
        want += BOX_COLUMNS
    if n == 0 or len(col) != len(header) or sorted(header) != sorted(want):
        raise AnnotationError(path, "header must be image,x0,y0,...,xN-1,yN-1 with optional "
                                    f"{','.join(BOX_COLUMNS)}, each once; got {','.join(header[:8])}...", 1)
    scheme = resolve_scheme(scheme, n, path)
    order = [col[f"{c}{i}"] for i in range(n) for c in "xy"]
    samples = []
    for lineno, row in rows:
        if len(row) != len(header):
            raise AnnotationError(path, f"expected {len(header)} columns, got {len(row)}", lineno)
        pts = check_points(_floats([row[c] for c in order], path, lineno), n, path, lineno)
        box = None
        if has_box and any(row[col[b]].strip() for b in BOX_COLUMNS):
            box = check_points(_floats([row[col[b]] for b in BOX_COLUMNS], path, lineno), 2, path, lineno)
            box = box.reshape(4)
        rel = row[col["image"]]
        samples.append(Sample(path.parent / rel, pts, rel, source=f"{path}:{lineno}", box=box))
    _require_samples(samples, path)
    return finish(str(path), scheme, samples, skip_missing)


def write_json(ds: Dataset, path: Path) -> None:
    out = []
    for s in ds.samples:
        item = {"image": _rel(s.image, path.parent), "landmarks": [[float(x), float(y)] for x, y in s.landmarks]}
        if s.box is not None:
            item["box"] = [float(v) for v in s.box]
        if s.attributes:
            item["attributes"] = s.attributes
        out.append(item)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"scheme": ds.scheme.name, "samples": out}, indent=1,
                               default=lambda o: o.item() if hasattr(o, "item") else str(o)))


@register("json", 'JSON {"scheme": name or null, "samples": [{"image": relpath, "landmarks": [[x, y], ...], '
          '"box": [x0, y0, x1, y1] (optional)}]}; images relative to the file', write=write_json)
def read_json(path: Path, scheme, skip_missing) -> Dataset:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AnnotationError(path, f"not valid JSON: {e.msg}", e.lineno) from None
    if not isinstance(data, dict) or not isinstance(data.get("samples"), list):
        raise AnnotationError(path, 'expected an object with a "samples" list')
    _require_samples(data["samples"], path)
    samples = []
    for k, item in enumerate(data["samples"]):
        where = f"samples[{k}]"
        if not isinstance(item, dict) or not isinstance(item.get("image"), str) or "landmarks" not in item:
            raise AnnotationError(path, f"{where}: needs \"image\" (a path) and \"landmarks\"")
        lm, box = item["landmarks"], item.get("box")
        if not isinstance(lm, list) or not lm or any(not isinstance(p, list) or len(p) != 2 for p in lm):
            raise AnnotationError(path, f"{where}: \"landmarks\" must be a list of [x, y] pairs")
        try:
            pts = check_points([v for p in lm for v in p], len(lm), path)
            box = None if box is None else check_points(box, 2, path).reshape(4)
        except (TypeError, ValueError) as e:
            msg = str(e).split(": ", 1)[-1] if isinstance(e, AnnotationError) else "values must be numbers"
            raise AnnotationError(path, f"{where}: {msg}") from None
        if samples and len(pts) != len(samples[0].landmarks):
            raise AnnotationError(path, f"{where}: {len(pts)} points, the first sample has {len(samples[0].landmarks)}")
        attrs = item.get("attributes") or {}
        if not isinstance(attrs, dict):
            raise AnnotationError(path, f"{where}: \"attributes\" must be an object of name: value, not "
                                        f"{type(attrs).__name__}")
        samples.append(Sample(path.parent / item["image"], pts, item["image"], source=f"{path}:{where}",
                              box=box, attributes=dict(attrs)))
    name = data.get("scheme")
    if name is not None and not isinstance(name, str):
        raise AnnotationError(path, f"\"scheme\" must be a scheme name (e.g. \"ibug68\"), not {type(name).__name__}")
    if scheme is None and name in BUILTIN:
        scheme = get_scheme(name)
    scheme = resolve_scheme(scheme, len(samples[0].landmarks), path)
    return finish(str(path), scheme, samples, skip_missing)


# --------------------------------------------------------------------------- checks


def check_in_image(ds: Dataset, margin: float = 0.5) -> list[tuple[Sample, str]]:
    """Samples with a point more than ``margin`` times the image's width/height outside
    it, each with a message ``SOURCE: point K at (x, y) is outside the WxH image``.

    Readers accept points outside the image (real faces are cut by the border); this
    finds the ones that are far out, usually a wrong image or swapped coordinates.
    Sizes come from the image headers (as the user sees them, after EXIF rotation);
    an unreadable image is reported with its error instead."""
    from facepoints.data.images import ImageError, image_size

    found = []
    for s in ds.samples:
        try:
            w, h = image_size(s.image)
        except ImageError as e:
            found.append((s, f"{s.source or s.id}: {e}"))
            continue
        lo, hi = -margin * np.array([w, h]), (1 + margin) * np.array([w, h]) - 1
        out = np.flatnonzero(((s.landmarks < lo) | (s.landmarks > hi)).any(axis=1))
        if out.size:
            x, y = s.landmarks[out[0]]
            found.append((s, f"{s.source or s.id}: point {out[0]} at ({x:.1f}, {y:.1f}) is outside the {w}x{h} "
                             f"image by more than {margin:g} of its size ({out.size} such point(s))"))
    return found
