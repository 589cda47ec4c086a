"""Losses, chosen by name.

Coordinate losses take ``(pred, target)``, both (B, P, 2) in crop units (0..1), or
in a head's grid units (PIP offsets). Adaptive Wing works on heatmaps (``on_heatmaps``):
the heatmap head renders the Gaussian targets it is compared with (``HeatmapHead.loss``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class WingLoss(nn.Module):
    """Wing loss (Feng et al., CVPR 2018): ``w ln(1 + |x|/eps)`` for ``|x| < w``,
    ``|x| - C`` beyond, with ``C = w - w ln(1 + w/eps)`` so the two pieces meet.

    ``w`` and ``eps`` are in the paper's units (pixels of a 64 px face); ``scale``
    converts our 0..1 crop units to those pixels.
    """

    def __init__(self, w: float = 10.0, eps: float = 2.0, scale: float = 64.0):
        super().__init__()
        self.w, self.eps, self.scale = w, eps, scale
        self.c = w - w * math.log(1 + w / eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = (pred - target).abs() * self.scale
        loss = torch.where(x < self.w, self.w * torch.log1p(x / self.eps), x - self.c)
        return loss.mean()


class AdaptiveWingLoss(nn.Module):
    """Adaptive Wing loss (Wang et al., ICCV 2019) on heatmaps, with its weighted
    loss map: pixels near a landmark (where the 3x3-dilated target is >= ``mask_threshold``)
    weigh ``weight + 1``, the rest 1.

    For ``|y - p| < theta``: ``omega ln(1 + |(y - p)/eps|^(alpha - y))``; beyond,
    ``A |y - p| - C`` with A and C chosen so that value and slope are continuous.
    """

    on_heatmaps = True  # takes (heatmaps, target heatmaps), not coordinates

    def __init__(self, omega: float = 14.0, theta: float = 0.5, eps: float = 1.0, alpha: float = 2.1,
                 weight: float = 10.0, mask_threshold: float = 0.2):
        super().__init__()
        self.omega, self.theta, self.eps, self.alpha = omega, theta, eps, alpha
        self.weight, self.mask_threshold = weight, mask_threshold

    def pixel_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        d = (target - pred).abs()
        power = self.alpha - target
        r = self.theta / self.eps
        a = self.omega / (1 + r ** power) * power * r ** (power - 1) / self.eps
        c = self.theta * a - self.omega * torch.log1p(r ** power)
        return torch.where(d < self.theta, self.omega * torch.log1p((d / self.eps) ** power), a * d - c)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dilated = F.max_pool2d(target, 3, stride=1, padding=1)
        w = 1 + self.weight * (dilated >= self.mask_threshold).to(pred.dtype)
        return (self.pixel_loss(pred, target) * w).mean()


LOSSES = ("l1", "l2", "smooth_l1", "wing", "awing")


def build_loss(name: str, **kw) -> nn.Module:
    name = name.lower()
    if name == "l1":
        return nn.L1Loss()
    if name == "l2":
        return nn.MSELoss()
    if name == "smooth_l1":
        return nn.SmoothL1Loss(beta=kw.get("beta", 0.01))
    if name == "wing":
        return WingLoss(**{k: kw[k] for k in ("w", "eps", "scale") if k in kw})
    if name == "awing":
        return AdaptiveWingLoss()
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
