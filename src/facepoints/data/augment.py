"""Training augmentation, declared with Albumentations, and its contact-sheet preview.

Geometry works on a cached crop that holds ``context`` times the model's view, so a
zoom-out, shift or rotation shows real background instead of black corners; a
centre crop then cuts the model's ``input_size`` view. Horizontal flips re-index the
landmarks through the scheme (``apply``), the one place that knows which point
mirrors which.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

from facepoints.schemes import LandmarkScheme  # noqa: E402


class AugmentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    flip: bool = True
    rotate: float = Field(15.0, ge=0, le=90, description="max rotation, degrees")
    scale: float = Field(0.10, ge=0, le=0.5, description="box size jitter, fraction")
    shift: float = Field(0.06, ge=0, le=0.3, description="box centre jitter, fraction of the side")
    perspective: float = Field(0.0, ge=0, le=0.1, description="perspective distortion scale (0 = off)")
    color: bool = True
    blur_noise: bool = True
    grayscale: float = Field(0.05, ge=0, le=1, description="probability of a grey image")
    occlusion: float = Field(0.0, ge=0, le=1, description="probability of synthetic occluders: 1-3 rectangles "
                             "of 10-40 % of the side filled with noise (random erasing); the hidden points "
                             "keep their labels, as in occluded test faces")
    occluder_photos: float = Field(0.0, ge=0, le=1, description="probability of pasting a patch of another "
                                   "training crop (a rectangle or an ellipse, 15-45 % of the side) on a crop; points "
                                   "under it are marked hidden: a visibility target nearer real occluders than noise")


def build_transform(cfg: AugmentConfig, input_size: int, train: bool) -> A.Compose:
    ops: list = []
    if train and cfg.enabled:
        if cfg.flip:
            ops.append(A.HorizontalFlip(p=0.5))
        ops.append(A.Affine(scale=(1 - cfg.scale, 1 + cfg.scale),
                            translate_percent={"x": (-cfg.shift, cfg.shift), "y": (-cfg.shift, cfg.shift)},
                            rotate=(-cfg.rotate, cfg.rotate), border_mode=0, p=0.9))
        if cfg.perspective > 0:
            ops.append(A.Perspective(scale=(0, cfg.perspective), p=0.3))
        if cfg.color:
            ops += [A.RandomBrightnessContrast(0.25, 0.25, p=0.6),
                    A.HueSaturationValue(8, 20, 10, p=0.4)]
        if cfg.grayscale > 0:
            ops.append(A.ToGray(p=cfg.grayscale))
        if cfg.blur_noise:
            ops.append(A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 5)),
                                A.GaussNoise(std_range=(0.02, 0.06))], p=0.25))
    ops.append(A.CenterCrop(input_size, input_size))
    if train and cfg.enabled and cfg.occlusion > 0:  # after the crop, so every occluder lands in the view
        ops.append(A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.1, 0.4),
                                   hole_width_range=(0.1, 0.4), fill="random", p=cfg.occlusion))
    return A.Compose(ops, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
                     save_applied_params=True)


def apply(transform: A.Compose, image: np.ndarray, points: np.ndarray, scheme: LandmarkScheme,
          visible: np.ndarray | None = None):
    """Run ``transform`` and keep point i meaning the same feature after a flip. With
    ``visible`` (one 0/1 per point), also return the points' visibility afterwards: a point
    under a synthetic occluder is hidden."""
    out = transform(image=image, keypoints=points)
    pts = np.asarray(out["keypoints"], dtype=np.float32)[:, :2]
    flipped = any(name == "HorizontalFlip" for name, _ in out["applied_transforms"])
    if flipped:
        pts = pts[scheme.flip_permutation]
    if visible is None:
        return out["image"], pts
    vis = np.asarray(visible, np.float32)[scheme.flip_permutation] if flipped else np.asarray(visible, np.float32).copy()
    for name, params in out["applied_transforms"]:
        if name == "CoarseDropout":
            for x1, y1, x2, y2 in np.asarray(params.get("holes", np.zeros((0, 4)))).reshape(-1, 4):
                inside = (pts[:, 0] >= x1) & (pts[:, 0] < x2) & (pts[:, 1] >= y1) & (pts[:, 1] < y2)
                vis[inside] = 0
    return out["image"], pts, vis


def paste_patch(image: np.ndarray, points: np.ndarray, visible: np.ndarray, donor: np.ndarray, rng,
                low: float = 0.15, high: float = 0.45):
    """``image`` (S, S, 3) with a patch of ``donor`` (another crop of the same size), a
    rectangle or an ellipse of ``low``-``high`` of the side, pasted at a random place;
    and ``visible`` with the points under the patch set to 0. Returns (image, visible)."""
    import cv2

    s = image.shape[0]
    pw, ph = (np.asarray(rng.uniform(low, high, 2)) * s).astype(int) + 1
    x0, y0 = int(rng.integers(0, s - pw + 1)), int(rng.integers(0, s - ph + 1))
    dx, dy = int(rng.integers(0, s - pw + 1)), int(rng.integers(0, s - ph + 1))
    mask = np.ones((ph, pw), bool)
    if rng.random() < 0.5:
        ell = np.zeros((ph, pw), np.uint8)
        cv2.ellipse(ell, (pw // 2, ph // 2), (max(1, pw // 2), max(1, ph // 2)), 0, 0, 360, 1, -1)
        mask = ell.astype(bool)
    out = image.copy()
    out[y0:y0 + ph, x0:x0 + pw][mask] = donor[dy:dy + ph, dx:dx + pw][mask]
    vis = np.asarray(visible, np.float32).copy()
    px, py = np.floor(points[:, 0]).astype(int) - x0, np.floor(points[:, 1]).astype(int) - y0
    inside = (px >= 0) & (px < pw) & (py >= 0) & (py < ph)
    vis[np.flatnonzero(inside)[mask[py[inside], px[inside]]]] = 0
    return out, vis


def contact_sheet(images: list[np.ndarray], points: list[np.ndarray], path, cols: int = 8, scheme=None) -> None:
    """Draw each augmented crop with its landmarks (right side of the face red, left
    side blue, so a wrong flip re-index shows as swapped colours) into one PNG."""
    import cv2

    from facepoints.data.draw import side_colours

    tiles = []
    for img, pts in zip(images, points):
        tile = img.copy()
        colours = side_colours(scheme, len(pts))
        for (x, y), c in zip(pts, colours):
            cv2.circle(tile, (int(round(x)), int(round(y))), 1, c, -1, lineType=cv2.LINE_AA)
        tiles.append(tile)
    rows = (len(tiles) + cols - 1) // cols
    h, w = tiles[0].shape[:2]
    sheet = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = t
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
