"""Small synthetic datasets that tests write themselves."""

from pathlib import Path

import cv2
import numpy as np

from facepoints.data.formats import write_pts
from facepoints.schemes import IBUG68


def synthetic_face_shape(cx=100.0, cy=110.0, size=80.0, seed=0) -> np.ndarray:
    """A plausible, left-right symmetric 68-point shape (jaw arc, brows, nose,
    eyes, mouth) around (cx, cy), with a little noise."""
    rng = np.random.default_rng(seed)
    p = np.zeros((68, 2))
    t = np.linspace(np.pi * 1.05, -0.05 * np.pi, 17)
    p[0:17] = np.c_[np.cos(t), -np.sin(t) * 1.1 + 0.1][::-1] * [0.5, 0.5]
    p[0:17, 0] *= -1
    p[17:22] = np.c_[np.linspace(-0.4, -0.08, 5), -0.35 - 0.05 * np.sin(np.linspace(0, np.pi, 5))]
    p[27:31] = np.c_[np.zeros(4), np.linspace(-0.25, 0.05, 4)]
    p[31:36] = np.c_[np.linspace(-0.1, 0.1, 5), np.full(5, 0.12)]
    eye = np.c_[np.cos(np.linspace(np.pi, -np.pi, 7)[:-1]) * 0.09, np.sin(np.linspace(np.pi, -np.pi, 7)[:-1]) * 0.03]
    p[36:42] = eye + [-0.22, -0.2]
    p[48:60] = np.c_[np.cos(np.linspace(np.pi, -np.pi, 13)[:-1]) * 0.2, np.sin(np.linspace(np.pi, -np.pi, 13)[:-1]) * 0.07 + 0.3]
    p[60:68] = np.c_[np.cos(np.linspace(np.pi, -np.pi, 9)[:-1]) * 0.12, np.sin(np.linspace(np.pi, -np.pi, 9)[:-1]) * 0.03 + 0.3]
    # mirror the subject's right side onto the left through the scheme's flip table
    for a, b in IBUG68.flip_pairs:
        if 17 <= a <= 21 or 36 <= a <= 41:
            p[b] = p[a] * [-1, 1]
    p += rng.normal(0, 0.005, p.shape)
    return (p * size + [cx, cy]).astype(np.float32)


def draw_face(points: np.ndarray, size=(220, 200)) -> np.ndarray:
    img = np.full((size[0], size[1], 3), 90, np.uint8)
    cv2.ellipse(img, (int(points[:, 0].mean()), int(points[:, 1].mean())), (45, 58), 0, 0, 360, (200, 170, 150), -1)
    for x, y in points:
        cv2.circle(img, (int(x), int(y)), 2, (40, 40, 40), -1)
    return img


def write_300w_folder(folder: Path, n: int = 12, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pts = synthetic_face_shape(100 + rng.uniform(-10, 10), 110 + rng.uniform(-10, 10), 80 + rng.uniform(-10, 10), seed=i)
        cv2.imwrite(str(folder / f"face{i:03d}_1.jpg"), draw_face(pts))
        write_pts(pts, folder / f"face{i:03d}_1.pts")
    return folder


def write_random_model(path: Path, **info) -> Path:
    """A MobileNetV3-small 68-point regression model with seeded random weights (64 px),
    saved with its metadata; ``info`` adds or overrides ModelInfo fields."""
    import torch

    from facepoints.models.network import build_model
    from facepoints.models.package import ModelInfo, save_model

    torch.manual_seed(0)
    meta = dict(scheme=IBUG68.to_dict(), backbone="mobilenet_v3_small", head="regression", input_size=64,
                crop_scale=1.25, training_data="none: random weights for tests")
    save_model(build_model("mobilenet_v3_small", 68).eval(), ModelInfo(**{**meta, **info}), path)
    return path
