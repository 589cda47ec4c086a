import numpy as np
import pytest

from facepoints.data.crop_cache import crop_sample
from facepoints.data.crops import crop_matrix, invert, square_from_box, transform_points, warp


def test_square_from_box():
    assert square_from_box([10, 20, 50, 100], 1.25) == (30.0, 60.0, 100.0)


def test_crop_maps_box_corners_to_crop_corners():
    # The square's edges are x = 30..70: its corner pixels' centres are 30.5 and
    # 69.5, and they land on the crop's corner pixels' centres, 0 and 79.
    m = crop_matrix(cx=49.5, cy=59.5, side=40, size=80)
    got = transform_points(np.array([[29.75, 39.75], [69.25, 79.25], [49.5, 59.5]]), m)
    np.testing.assert_allclose(got, [[0, 0], [79, 79], [39.5, 39.5]], atol=1e-4)


@pytest.mark.parametrize("angle", [0.0, 13.0, -40.0])
def test_inverse_round_trip(angle):
    m = crop_matrix(123.4, 56.7, 88.0, 64, angle)
    pts = np.random.default_rng(0).uniform(0, 200, (68, 2))
    back = transform_points(transform_points(pts, m), invert(m))
    np.testing.assert_allclose(back, pts, atol=1e-3)


def test_warp_moves_a_dot_where_the_matrix_says():
    img = np.zeros((200, 300, 3), np.uint8)
    img[120, 210] = 255
    m = crop_matrix(200, 110, 64, 64, 0)
    crop = warp(img, m, 64)
    y, x = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])
    px, py = transform_points(np.array([[210, 120]]), m)[0]
    assert abs(x - px) <= 1 and abs(y - py) <= 1


def test_crop_sample_centres_the_face():
    img = np.zeros((300, 300, 3), np.uint8)
    pts = np.array([[100, 100], [200, 100], [150, 220]], np.float32)
    crop, p = crop_sample(img, pts, 96, 1.25)
    assert crop.shape == (96, 96, 3)
    box_c = (p.min(0) + p.max(0)) / 2
    np.testing.assert_allclose(box_c, [47.5, 47.5], atol=1e-3)
    # the longer side of the landmark box (120 px) fills 1/1.25 of the crop
    assert (p.max(0) - p.min(0)).max() == pytest.approx(120 * 96 / 150, abs=1e-3)


def test_box_iou_by_hand():
    from facepoints.data.crops import box_iou

    got = box_iou([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], (0, 0, 10, 10))
    np.testing.assert_allclose(got, [1.0, 50 / 150, 0.0])
