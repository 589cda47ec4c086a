"""Pseudo-labels for the CUHK 5-point faces, checked against their human 5 points.

    facepoints label ../shared/data/cuhk5/lfw_5590 --teacher dlib --out 300w:runs/pseudo-cuhk/lfw
    facepoints label ../shared/data/cuhk5/net_7876 --teacher dlib --out 300w:runs/pseudo-cuhk/net
    python lab/pseudo-labels/pseudo_cuhk.py runs/pseudo-cuhk/lfw runs/pseudo-cuhk/net --sources lfw_5590 net_7876 \\
        --out runs/pseudo-cuhk/kept.csv --max-nme5 0.08 --md lab/pseudo-labels/pseudo_cuhk.md

The AFLW crops are left out of training: AFLW2000-3D, a test set the bars speak of, is
drawn from AFLW, so its faces may be among them.

The CUHK crops carry 5 human points (eye centres, nose tip, mouth corners) but not
68. ``facepoints label --teacher dlib`` gives every detected face 68 points from
dlib's model (pseudo-labels). This script maps each face's 68 points to the same 5
(mean of each eye's 6 points, point 30, points 48 and 54), picks in each crop the
labelled face nearest to the human points, and measures the error of those 5 points
in inter-ocular units of the human eye centres (NME5). Faces within ``--max-nme5``
are written to ``--out`` (csv format, images relative to it) for training as a source
of their own; every crop is accounted for in the report: kept,
rejected by NME5, or with no labelled face.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

from facepoints.data.formats import read_dataset, write_dataset
from facepoints.data.samples import Dataset, Sample
from facepoints.schemes import IBUG68

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ablation"))
from ablation import write_keeping_reading  # noqa: E402

CUHK = Path(__file__).resolve().parents[3] / "shared" / "data" / "cuhk5"


def five_from_68(pts: np.ndarray) -> np.ndarray:
    """iBUG 68 -> CUHK 5 (image-left eye first, as CUHK orders them)."""
    return np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])


def nme5(five: np.ndarray, human: np.ndarray) -> float:
    iod = np.linalg.norm(human[0] - human[1])
    return float(np.linalg.norm(five - human, axis=1).mean() / max(iod, 1e-6))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path, help="outputs of facepoints label (300w format)")
    ap.add_argument("--cuhk", type=Path, default=CUHK)
    ap.add_argument("--out", type=Path, required=True, help="csv dataset of the kept faces")
    ap.add_argument("--sources", nargs="+", help="CUHK folders to report and keep (default: all); "
                    "crops of the others are not counted")
    ap.add_argument("--max-nme5", type=float, default=0.08)
    ap.add_argument("--md", type=Path, help="write the report here as markdown")
    args = ap.parse_args(argv)

    human = {}
    for txt in ("new_training.txt", "new_testing.txt"):
        for s in read_dataset(f"cuhk5:{args.cuhk / txt}").samples:
            source = Path(s.id).parent.name
            if args.sources is None or source in args.sources:
                human[Path(s.id).stem] = (source, s.landmarks)
    if not human:
        ap.error(f"no crop of {args.sources} in {args.cuhk}/new_training.txt or new_testing.txt")
    by_photo: dict[str, list[Sample]] = {}
    for folder in args.folders:
        for s in read_dataset(f"300w:{folder}", scheme=IBUG68).samples:
            by_photo.setdefault(s.id.rsplit("_", 1)[0], []).append(s)

    kept, errs, per_source = [], [], {}
    no_face = 0
    for stem, (source, pts5) in sorted(human.items()):
        stats = per_source.setdefault(source, {"crops": 0, "no face": 0, "kept": 0, "nme5": []})
        stats["crops"] += 1
        faces = by_photo.get(stem, [])
        if not faces:
            stats["no face"] += 1
            no_face += 1
            continue
        e = [nme5(five_from_68(f.landmarks), pts5) for f in faces]
        k = int(np.argmin(e))
        stats["nme5"].append(e[k])
        errs.append(e[k])
        if e[k] <= args.max_nme5:
            f = faces[k]
            kept.append(Sample(f.image, f.landmarks, f.id, source=f"pseudo:dlib:{source}/{stem}",
                               attributes={"group": f"cuhk/{source}/{stem}"}))
            stats["kept"] += 1
    write_dataset(Dataset("pseudo-cuhk", IBUG68, kept), f"csv:{args.out}")

    lines = ["# dlib pseudo-labels on CUHK crops vs their human 5 points\n",
             f"Run {datetime.date.today()}: `python lab/pseudo-labels/pseudo_cuhk.py {' '.join(sys.argv[1:])}`\n",
             "NME5: mean error of the 5 points derived from dlib's 68 (eye centres = mean of each eye's "
             "6 points, nose tip 30, mouth corners 48/54) in inter-ocular units of the human eye centres. "
             "Part of it is convention (CUHK's nose point and eye centres are not defined as iBUG's), so it "
             "is a filter for gross failures, not an NME of the 68 points.\n",
             f"| source | crops | no face labelled | NME5 median % | NME5 p90 % | NME5 > 50 % | "
             f"kept (NME5 <= {args.max_nme5 * 100:.0f} %) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, st in sorted(per_source.items()) + [("all", {"crops": len(human), "no face": no_face,
                                                            "kept": len(kept), "nme5": errs})]:
        e = np.array(st["nme5"]) if st["nme5"] else np.array([np.nan])
        lines.append(f"| {name} | {st['crops']} | {st['no face']} | {np.median(e) * 100:.2f} | "
                     f"{np.percentile(e, 90) * 100:.2f} | {int((e > 0.5).sum())} | {st['kept']} |")
    print("\n".join(lines))
    if args.md:
        write_keeping_reading(args.md, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
