"""The cleaning report: a CSV of every sample, the JSON a training config excludes by,
and an HTML page of thumbnails with the labels drawn."""

from __future__ import annotations

import base64
import csv
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facepoints.data.samples import Dataset


@dataclass
class SampleScore:
    """The result for one sample. ``checks`` maps a check name to its score."""

    index: int
    id: str
    score: float
    reasons: list[str]
    checks: dict[str, float]
    flagged: bool = False
    prediction: np.ndarray | None = None

    def to_dict(self, with_checks: bool = False) -> dict:
        d = {"id": self.id, "score": round(float(self.score), 3), "reasons": list(self.reasons)}
        if with_checks:
            d["flagged"] = self.flagged
            d["checks"] = {k: round(float(v), 3) for k, v in sorted(self.checks.items())}
        return d


@dataclass
class CleanReport:
    dataset: str
    scheme: str
    threshold: float
    model: str | None
    ranked: list[SampleScore]  # highest score first
    warnings: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.ranked)

    @property
    def flagged(self) -> list[SampleScore]:
        return [s for s in self.ranked if s.flagged]

    def to_json(self, all_samples: bool = False) -> dict:
        """The ``facepoints clean --json`` object; ``all_samples`` adds every sample's
        check scores (what ``report.json`` holds)."""
        out = {"n": self.n, "flagged": [s.to_dict() for s in self.flagged], "threshold": self.threshold,
               "dataset": self.dataset, "scheme": self.scheme, "model": self.model}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if all_samples:
            out["samples"] = [s.to_dict(with_checks=True) for s in self.ranked]
        return out


# --------------------------------------------------------------------------- scoring


def write_report(report: CleanReport, ds: Dataset, folder: str | Path, max_thumbnails: int = 200,
                 thumb_size: int = 192) -> dict[str, Path]:
    """``report.csv`` (every sample, ranked, with each check's score), ``report.json``
    (``to_json(all_samples=True)``; its ``flagged`` list is what ``data.exclude`` of a
    training config reads) and ``report.html`` (the flagged samples, at least the top
    20, at most ``max_thumbnails``, as thumbnails with the labels drawn, PNG embedded)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted({k for r in report.ranked for k in r.checks})
    paths = {"csv": folder / "report.csv", "json": folder / "report.json", "html": folder / "report.html"}
    with open(paths["csv"], "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:  # ids are file names
        w = csv.writer(fh)
        w.writerow(["rank", "id", "score", "flagged", "reasons", "image"] + names)
        for rank, r in enumerate(report.ranked, 1):
            w.writerow([rank, r.id, f"{r.score:.3f}", int(r.flagged), " | ".join(r.reasons),
                        str(ds.samples[r.index].image)] + [f"{r.checks.get(k, 0.0):.2f}" for k in names])
    paths["json"].write_text(json.dumps(report.to_json(all_samples=True), indent=1))
    shown = [r for r in report.ranked if r.flagged]
    if len(shown) < 20:
        shown = report.ranked[:20]
    shown = shown[:max_thumbnails]
    rows = []
    for rank, r in enumerate(shown, 1):
        s = ds.samples[r.index]
        png = _thumbnail_png(s, r.prediction, ds.scheme, thumb_size)
        img = (f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
               f'width="{thumb_size}" height="{thumb_size}">' if png else "<i>no image</i>")
        reasons = "".join(f"<li>{html.escape(t)}</li>" for t in r.reasons) or "<li>(below the threshold)</li>"
        rows.append(f"<tr class=\"{'flag' if r.flagged else ''}\"><td>{rank}</td><td>{img}</td>"
                    f"<td><b>{html.escape(r.id)}</b><br>score {r.score:.1f}<br>"
                    f"<small>{html.escape(str(s.image))}</small><ul>{reasons}</ul></td></tr>")
    head = (f"<h1>facepoints clean: {html.escape(report.dataset)}</h1>"
            f"<p>{report.n} samples, scheme {html.escape(report.scheme)}, "
            f"{len(report.flagged)} flagged (score &ge; {report.threshold:g}); model: "
            f"{html.escape(report.model or 'none (heuristics only)')}. Labels: subject's right red, left blue, "
            f"midline green, consecutive points of a group joined; the model's landmarks are yellow crosses.</p>")
    warn = "".join(f"<p class=warn>{html.escape(w)}</p>" for w in report.warnings)
    style = ("body{font-family:sans-serif;margin:1em}td{vertical-align:top;padding:4px;border-bottom:1px solid #ddd}"
             "tr.flag td:first-child{color:#c00;font-weight:bold}ul{margin:4px 0;padding-left:1.2em}"
             ".warn{color:#a60}")
    paths["html"].write_text(f"<!doctype html><html><head><meta charset=utf-8><title>facepoints clean</title>"
                             f"<style>{style}</style></head><body>{head}{warn}<table>{''.join(rows)}</table>"
                             f"</body></html>", errors="replace")
    return paths


def _thumbnail_png(sample, prediction, scheme, size: int) -> bytes | None:
    import cv2

    from facepoints.data.crops import crop_matrix, transform_points, warp
    from facepoints.data.images import ImageError, read_image
    from facepoints.data.draw import YELLOW, side_colours

    try:
        img = read_image(sample.image)
    except ImageError:
        return None
    h, w = img.shape[:2]
    pts = np.asarray(sample.landmarks, np.float64)
    fin = np.isfinite(pts).all(1)
    both = [pts[fin]] + ([prediction] if prediction is not None else [])
    allp = np.concatenate(both) if fin.any() else np.zeros((0, 2))
    if len(allp):
        x0, y0 = allp.min(0)
        x1, y1 = allp.max(0)
        side = max(x1 - x0, y1 - y0, 16.0) * 1.4
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if not len(allp) or side > 3 * max(w, h):
        cx, cy, side = (w - 1) / 2, (h - 1) / 2, float(max(w, h))
    m = crop_matrix(cx, cy, side, size)
    tile = warp(img, m, size)
    colours = side_colours(scheme, len(pts))
    p = transform_points(np.where(fin[:, None], pts, 0), m).astype(np.float64)
    for members in scheme.groups.values():
        ok = [j for j in members if fin[j]]
        if len(ok) > 1:
            cv2.polylines(tile, [np.round(p[ok]).astype(np.int32)], False, (200, 200, 200), 1, cv2.LINE_AA)
    for j in np.flatnonzero(fin):
        cv2.circle(tile, (int(round(p[j, 0])), int(round(p[j, 1]))), 2, colours[j], -1, cv2.LINE_AA)
    if prediction is not None:
        for x, y in transform_points(prediction, m):
            cv2.drawMarker(tile, (int(round(x)), int(round(y))), YELLOW, cv2.MARKER_CROSS, 5, 1)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(tile, cv2.COLOR_RGB2BGR))
    return buf.tobytes() if ok else None
