"""Hand-computed checks of the evaluation metrics."""

from __future__ import annotations

import numpy as np
import pytest

from facepoints.evaluation.metrics import (
    auc,
    ced,
    failure_rate,
    nme,
    normaliser,
    plot_ced,
    summary,
)
from facepoints.schemes import LandmarkScheme, SchemeError, get_scheme

IBUG = get_scheme("ibug68")


def _face68(seed: int = 0) -> np.ndarray:
    """68 points inside a 300 x 300 box with outer eye corners exactly 100 px apart."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(120, 260, size=(68, 2))
    pts[36] = (130.0, 150.0)
    pts[45] = (230.0, 150.0)
    return pts


# ---------------------------------------------------------------- normalisers


def test_nme_io_shift_3_4_is_exactly_five_percent():
    gt = np.stack([_face68(0), _face68(1)])
    pred = gt + np.array([3.0, 4.0])  # every point 5 px off
    np.testing.assert_allclose(normaliser(gt, IBUG, "io"), [100.0, 100.0])
    err = nme(pred, gt, IBUG, kind="io")
    assert err.shape == (2,)
    np.testing.assert_allclose(err, 0.05, rtol=0, atol=1e-12)
    # default kind is io, and a scheme may be named
    np.testing.assert_allclose(nme(pred, gt, "ibug68"), 0.05, atol=1e-12)


def test_io_normaliser_tilted_eyes():
    gt = _face68()
    gt[36] = (100.0, 100.0)
    gt[45] = (160.0, 180.0)  # 60, 80 -> 100
    assert normaliser(gt[None], IBUG, "io")[0] == pytest.approx(100.0)


def test_single_face_is_a_batch_of_one():
    gt = _face68()
    assert normaliser(gt, IBUG, "io").shape == (1,)
    assert nme(gt + [3, 4], gt, IBUG).shape == (1,)


def test_ip_normaliser_is_distance_between_eye_means():
    gt = _face68()
    # Right eye (36..41) centred on (150, 100), left eye (42..47) on (210, 180):
    # the pupils are 60, 80 apart -> 100, although the corners are elsewhere.
    ring = np.array([[-12, 0], [-5, -4], [5, -4], [12, 0], [5, 4], [-5, 4]], float)
    gt[36:42] = (150, 100) + ring
    gt[42:48] = (210, 180) + ring * [1.3, 0.7]  # a different, still centred shape
    assert normaliser(gt, IBUG, "ip")[0] == pytest.approx(100.0)
    # corners of this face: 36 = (138, 100), 45 = (210 + 12*1.3, 180)
    assert normaliser(gt, IBUG, "io")[0] == pytest.approx(np.hypot(210 + 15.6 - 138, 80))


def test_ip_normaliser_single_point_pupils_wflw():
    wflw = get_scheme("wflw98")
    gt = np.random.default_rng(3).uniform(0, 50, size=(3, 98, 2))
    gt[:, 96] = (10, 10)
    gt[:, 97] = [(13, 14), (10, 30), (0, 10)]
    np.testing.assert_allclose(normaliser(gt, wflw, "ip"), [5.0, 20.0, 10.0])


def test_box_normaliser_is_sqrt_area_of_tight_box():
    rng = np.random.default_rng(4)
    gt = rng.uniform(0, 1, size=(2, 68, 2)) * [80, 45] + [10, 20]
    # pin the extremes so that the box is exactly [10, 90] x [20, 65] / [0, 50] x [0, 50]
    gt[0, 0], gt[0, 1] = (10, 20), (90, 65)
    gt[1] = rng.uniform(0, 50, size=(68, 2))
    gt[1, 5], gt[1, 6] = (0, 0), (50, 50)
    np.testing.assert_allclose(normaliser(gt, IBUG, "box"), [60.0, 50.0])  # sqrt(80*45)=60


def test_box_nme():
    gt = np.zeros((1, 5, 2))
    gt[0] = [(0, 0), (40, 0), (20, 10), (0, 10), (40, 10)]  # box 40 x 10 -> 20
    pred = gt.copy()
    pred[0, 2] += (6, 8)  # one point 10 px off, mean 2 px
    assert nme(pred, gt, "five", kind="box")[0] == pytest.approx(0.1)


def test_missing_normaliser_is_a_clear_error():
    contest = get_scheme("contest971")
    gt = np.random.default_rng(0).uniform(0, 1, size=(1, 971, 2))
    with pytest.raises(ValueError, match="outer_eye_corners"):
        normaliser(gt, contest, "io")
    with pytest.raises(SchemeError, match="contest971"):
        nme(gt, gt, contest, kind="io")
    bare = LandmarkScheme(name="bare3", num_points=3)
    with pytest.raises(ValueError, match="pupils"):
        normaliser(np.ones((1, 3, 2)), bare, "ip")
    # box needs nothing from the scheme
    assert normaliser(gt, contest, "box").shape == (1,)


def test_bad_inputs():
    gt = _face68()[None]
    with pytest.raises(ValueError, match="kind"):
        normaliser(gt, IBUG, "diag")
    with pytest.raises(ValueError, match="68"):
        normaliser(gt[:, :60], IBUG, "io")
    with pytest.raises(ValueError, match="shape"):
        nme(gt[:, :, :1], gt, IBUG)
    with pytest.raises(ValueError, match="shape"):
        nme(np.concatenate([gt, gt]), gt, IBUG)
    degenerate = gt.copy()
    degenerate[0, 45] = degenerate[0, 36]
    with pytest.raises(ValueError, match="zero"):
        nme(gt, degenerate, IBUG)


# ----------------------------------------------------------- failure rate, AUC


def test_failure_rate_threshold_is_not_a_failure():
    assert failure_rate([0.05, 0.15, 0.2, 0.1], 0.1) == 0.5
    assert failure_rate(np.array([0.0, 0.0]), 0.1) == 0.0
    assert failure_rate([0.05, 0.07], threshold=0.06) == 0.5
    assert failure_rate([0.05, np.nan]) == 0.5  # a NaN error is a failure
    with pytest.raises(ValueError):
        failure_rate([])


def test_auc_all_zero_is_one():
    assert auc(np.zeros(10), 0.1) == pytest.approx(1.0, abs=1e-3)


def test_auc_all_failures_is_zero():
    assert auc([0.11, 0.5, 3.0], 0.1) == 0.0
    assert auc([np.nan, np.inf], 0.1) == 0.0


def test_auc_hand_computed_step_cases():
    # CED of {0.02, 0.04, 0.06, 0.08} is 1/4 on [0.02,0.04), 1/2, 3/4, then 1 from 0.08:
    # area = 0.25 * (0.08 + 0.06 + 0.04 + 0.02) = 0.05 -> 0.05 / 0.1 = 0.5
    assert auc([0.02, 0.04, 0.06, 0.08], 0.1) == pytest.approx(0.5, abs=1e-3)
    # all errors 0.05: CED jumps from 0 to 1 halfway
    assert auc(np.full(7, 0.05), 0.1) == pytest.approx(0.5, abs=1e-3)
    # half perfect, half failed
    assert auc([0.0, 0.0, 1.0, 1.0], 0.1) == pytest.approx(0.5, abs=1e-3)
    # {0, 0.03}: area = 0.5 * 0.1 + 0.5 * 0.07 = 0.085 -> 0.85, at another threshold too
    assert auc([0.0, 0.03], 0.1) == pytest.approx(0.85, abs=1e-3)
    assert auc([0.0, 0.03], 0.08) == pytest.approx((0.04 + 0.025) / 0.08, abs=1e-3)


def test_auc_matches_exact_integral_of_ced():
    e = np.random.default_rng(0).gamma(2.0, 0.03, size=500)
    exact = np.mean(np.clip(0.1 - e, 0, None)) / 0.1
    assert auc(e, 0.1) == pytest.approx(exact, abs=2e-3)
    assert auc(e, 0.1, step=1e-5) == pytest.approx(exact, abs=2e-4)


def test_auc_uniform_errors_is_one_half():
    # errors spread evenly over [0, 0.1]: the CED is the diagonal, area 1/2
    e = (np.arange(1000) + 0.5) / 1000 * 0.1
    assert auc(e, 0.1) == pytest.approx(0.5, abs=1e-3)


def test_ced_curve():
    xs, ys = ced([0.02, 0.04, 0.2], threshold=0.1, step=0.01)
    np.testing.assert_allclose(xs, np.arange(11) * 0.01, atol=1e-12)
    assert ys[0] == 0 and ys[2] == pytest.approx(1 / 3) and ys[4] == pytest.approx(2 / 3)
    assert ys[-1] == pytest.approx(2 / 3)
    assert np.all(np.diff(ys) >= 0)


# -------------------------------------------------------------------- summary


def test_summary_units_and_values():
    gt = np.stack([_face68(s) for s in range(4)])
    pred = gt + np.array([3.0, 4.0])
    s = summary(pred, gt, IBUG)
    assert s["n"] == 4
    assert s["primary"] == "io"
    assert s["nme_io"] == pytest.approx(5.0)  # percent
    ip = normaliser(gt, IBUG, "ip")
    box = normaliser(gt, IBUG, "box")
    assert s["nme_ip"] == pytest.approx(np.mean(5.0 / ip) * 100)
    assert s["nme_box"] == pytest.approx(np.mean(5.0 / box) * 100)
    assert s["fr10"] == 0.0
    assert s["auc10"] == pytest.approx(0.5, abs=1e-3)  # fraction
    assert set(s["nme_groups"]) == set(IBUG.groups)
    for v in s["nme_groups"].values():
        assert v == pytest.approx(5.0)


def test_summary_failure_rate_in_percent_and_groups():
    gt = np.stack([_face68(s) for s in range(4)])
    pred = gt.copy()
    pred[0] += (30.0, 40.0)  # 50 px = 0.5 io: a failure
    pred[1, 48:68] += (0.0, 20.0)  # only the mouth moves
    s = summary(pred, gt, IBUG)
    assert s["fr10"] == pytest.approx(25.0)
    assert s["nme_io"] == pytest.approx((50 + 20 * 20 / 68) / 4)  # percent of 100 px
    assert s["nme_groups"]["mouth"] == pytest.approx((50 + 20) / 4)
    assert s["nme_groups"]["jaw"] == pytest.approx(50 / 4)
    assert "nme_groups" not in summary(pred, gt, IBUG, groups=False)


def test_summary_without_eye_corners_falls_back_to_pupils():
    contest = get_scheme("contest971")
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 200, size=(2, 971, 2))
    gt[:, 969], gt[:, 970] = (50, 80), (150, 80)
    s = summary(gt + [3, 4], gt, contest)
    assert s["nme_io"] is None
    assert s["primary"] == "ip"
    assert s["nme_ip"] == pytest.approx(5.0)
    assert s["nme_groups"]["lips"] == pytest.approx(5.0)


# ---------------------------------------------------------------------- plot


def test_plot_ced_writes_a_png(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    curves = {
        "good": rng.gamma(2.0, 0.015, size=300),
        "bad": rng.gamma(2.0, 0.04, size=300),
        "perfect": np.zeros(5),
    }
    out = plot_ced(curves, tmp_path / "sub" / "ced.png", threshold=0.1)
    assert out == tmp_path / "sub" / "ced.png"
    data = out.read_bytes()
    assert len(data) > 1000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 0  # something was drawn
    with pytest.raises(ValueError):
        plot_ced({}, tmp_path / "empty.png")


def test_every_benchmark_result_starts_with_the_shared_header():
    """One header writer: title, command, date, machine (or the GPU named), software;
    every product benchmark script writes its result through it."""
    import datetime
    from pathlib import Path

    from facepoints.evaluation.machine import report_header

    lines = report_header("Speed", "python benchmarks/x.py --n 3", "1 thread")
    assert lines[0] == "# Speed" and lines[2] == "Command: `python benchmarks/x.py --n 3`  "
    assert lines[3] == f"Date: {datetime.date.today()}  "
    assert lines[4].startswith("Machine: ") and lines[4].endswith("; 1 thread  ") and " cores " in lines[4]
    assert lines[5].startswith("Software: Python ") and "numpy" in lines[5] and lines[-1] == ""
    assert report_header("T", "c", machine="GPU X")[4] == "Machine: GPU X  "
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    writers = [p.name for p in root.glob("*.py") if p.name != "mediapipe_worker.py"]
    assert writers and all("report_header(" in (root / w).read_text() for w in writers), writers
    assert all("command_line(__file__" in (root / w).read_text() for w in writers), writers


def test_a_benchmark_command_is_written_so_that_it_can_be_pasted_back():
    from facepoints.evaluation.machine import command_line

    here = "/somewhere/repo/benchmarks/compare.py"
    assert command_line(here, ["--detect-sizes", "", "--pose-set", "../a b"]) == \
        "python benchmarks/compare.py --detect-sizes '' --pose-set '../a b'"
    assert command_line(here, []) == "python benchmarks/compare.py"
    assert command_line(here, ["--n", "3"], prefix="OMP_NUM_THREADS=1 ") == \
        "OMP_NUM_THREADS=1 python benchmarks/compare.py --n 3"
