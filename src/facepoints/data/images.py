"""Reading images the way a user sees them, and refusing the ones that would hurt.

Every image in facepoints goes through ``read_image``: it applies the EXIF orientation
(landmarks are in the orientation the user sees), converts any mode (grayscale,
RGBA, CMYK, 16-bit) to 8-bit RGB, and checks the declared size before decoding, so a
small file that claims 30,000 x 30,000 pixels is refused instead of filling memory.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facepoints.errors import FacepointsError

# the image files folder scans pick up
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# image formats a user may expect to work, said so when a folder scan skips them
UNSUPPORTED_IMAGE_SUFFIXES = (".gif", ".heic", ".heif", ".avif", ".jxl", ".svg", ".raw", ".cr2", ".nef", ".dng")

# 50 megapixels: larger than any phone photo, far below a decompression bomb.
MAX_PIXELS = 50_000_000


class ImageError(FacepointsError, ValueError):
    """An image that cannot be used; the message names it and says why."""

    exit_code = 1


class ImageTooLarge(ImageError):
    """An image over the pixel limit (a possible decompression bomb)."""

    exit_code = 2
    http_status = 413


def read_image(source: str | Path | bytes, max_pixels: int = MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """Decode a file path or encoded bytes to an ``(H, W, 3)`` uint8 RGB array."""
    label = name or (str(source) if not isinstance(source, (bytes, bytearray)) else "<upload>")
    try:
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise ImageError(f"{label}: empty file")
            fh = io.BytesIO(source)
        else:
            p = Path(source)
            if not p.is_file():
                raise ImageError(f"{label}: no such file")
            if p.stat().st_size == 0:
                raise ImageError(f"{label}: empty file (0 bytes)")
            fh = open(p, "rb")
        with fh, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fh)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageTooLarge(f"{label}: {w}x{h} pixels is over the limit of {max_pixels:,} (possible decompression bomb)")
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb8(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # PIL's own limit fired first (far beyond ours): say it the way our check does
        import re

        m = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(m.group(1)):,} pixels" if m else "too many pixels"
        raise ImageTooLarge(f"{label}: {size} is over the limit of {max_pixels:,} (possible decompression bomb); "
                         "refused before decoding") from None
    except UnidentifiedImageError as e:
        raise ImageError(f"{label}: not a readable image ({e.__class__.__name__})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{label}: corrupt or truncated image ({_one_line(e)})") from None
    except Exception as e:  # a decoder tripping over hostile bytes (struct.error, IndexError, ...)
        raise ImageError(f"{label}: corrupt image ({e.__class__.__name__}: {_one_line(e)})") from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


def _to_rgb8(img: Image.Image) -> np.ndarray:
    if img.mode.startswith("I;16") or img.mode == "I":
        a = np.asarray(img, dtype=np.float64)
        # 16-bit modes span 0..65535 whatever the content (a dark frame stays dark);
        # 32-bit "I" is ambiguous: scaled down only when it holds values over 255
        full = 65535.0 if img.mode != "I" or a.max() > 255 else 255.0
        a = np.rint(np.clip(a / full * 255.0, 0, 255)).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as the user sees it (after EXIF rotation), without decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                orientation = img.getexif().get(0x0112, 1)
    except Exception as e:
        raise ImageError(f"{path}: not a readable image ({e.__class__.__name__}: {_one_line(e)})") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def write_image(path: str | Path, rgb: np.ndarray, jpeg_quality: int = 95, inputs=()) -> Path:
    """Encode an RGB uint8 image by the path's suffix (PNG, JPEG, ...) and write it with
    Python's file API (OpenCV's own writer crashes on some non-UTF-8 file names) by the
    rules of :mod:`facepoints.data.outputs` (never onto one of ``inputs``, never through
    a link, atomically)."""
    import cv2

    from facepoints.data.outputs import write_bytes

    path = Path(path)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise ImageError(f"{path}: cannot encode an image as {path.suffix or '.png'}")
    return write_bytes(path, buf.tobytes(), inputs)


def short_names(paths: list[Path | str]) -> list[str]:
    """The fewest trailing path parts that tell each path from the others:
    ``[x/helen/trainset, x/lfpw/trainset, x/afw]`` -> ``[helen/trainset, lfpw/trainset, afw]``."""
    parts = [Path(p).parts for p in paths]

    def tail(k: int, d: int) -> tuple:
        return parts[k][-d:]

    out = []
    for k in range(len(parts)):
        d = 1
        # an identical path cannot be told apart by more parts: it does not count
        while d < len(parts[k]) and any(tail(j, d) == tail(k, d) for j in range(len(parts))
                                        if j != k and parts[j] != parts[k]):
            d += 1
        out.append("/".join(tail(k, d)))
    return out


def output_names(files: list[Path], suffixes: tuple[str, ...] = ()) -> list[str]:
    """A distinct relative output name per input file, without suffix: its name, or as
    many of its folders as it takes to tell it from the others (``a/face.jpg`` and
    ``b/face.jpg`` -> ``a/face`` and ``b/face``). Inputs that would still share a name
    (``face.jpg`` and ``face.png`` in one folder) keep their own suffix in it
    (``face.jpg``, ``face.png``), so the outputs (name + each of ``suffixes``) are distinct."""
    resolved = [f.resolve() for f in files]
    names = short_names([r.with_suffix("") for r in resolved])
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return [f"{n}{r.suffix}" if counts[n] > 1 else n for n, r in zip(names, resolved)]


def scan_images(paths, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> tuple[list[Path], list[str]]:
    """The files given, and the files with one of ``suffixes`` in the folders given
    (recursively, sorted); and one line per thing a folder scan skipped that a user
    may have meant: an image format not supported, a broken symbolic link, and a count
    of the other files."""
    files: list[Path] = []
    skipped: list[str] = []
    for p in map(Path, paths):
        if not p.is_dir():
            files.append(p)
            continue
        others = 0
        for f in sorted(p.rglob("*")):
            if f.is_symlink() and not f.exists():
                skipped.append(f"skipped {f}: a broken symbolic link")
            elif not f.is_file():
                continue
            elif f.suffix.lower() in suffixes:
                files.append(f)
            elif f.suffix.lower() in UNSUPPORTED_IMAGE_SUFFIXES:
                skipped.append(f"skipped {f}: {f.suffix.lower()} images are not supported "
                               f"(convert to one of {', '.join(IMAGE_SUFFIXES)})")
            else:
                others += 1
        if others:
            skipped.append(f"{p}: {others} other file(s) that are not images ignored")
    return files, skipped
