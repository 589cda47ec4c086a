"""Training augmentation: occluders cover part of the view and keep every label."""

import numpy as np

from facepoints.data.augment import AugmentConfig, apply, build_transform
from facepoints.schemes import get_scheme


def test_occlusion_erases_part_of_the_view_and_keeps_all_points():
    scheme = get_scheme("ibug68")
    image = np.full((96, 96, 3), 128, np.uint8)  # a flat crop: any change is an occluder
    points = np.random.default_rng(0).uniform(20, 76, (68, 2)).astype(np.float32)
    only_occlusion = dict(flip=False, rotate=0, scale=0, shift=0, color=False, blur_noise=False, grayscale=0)
    t = build_transform(AugmentConfig(**only_occlusion, occlusion=1.0), 64, train=True)
    t.set_random_seed(0)
    changed = []
    for _ in range(10):
        img, pts = apply(t, image, points, scheme)
        assert img.shape == (64, 64, 3) and pts.shape == (68, 2)
        np.testing.assert_allclose(pts, points - 16, atol=1e-4)  # the centre crop only: labels untouched
        frac = (np.abs(img.astype(int) - 128).sum(-1) > 0).mean()
        changed.append(frac)
    # 1-3 holes of 10-40 % of the side: between 1 % and about half of the view
    assert min(changed) > 0.005 and max(changed) < 0.5
    off = build_transform(AugmentConfig(**only_occlusion), 64, train=True)
    assert (apply(off, image, points, scheme)[0] == 128).all()
