"""Coordinate losses, chosen by name. Inputs are (B, P, 2) in crop units (0..1)."""

from __future__ import annotations

import math

import torch
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
    raise ValueError(f"unknown loss {name!r}; choose from l1, l2, smooth_l1, wing")
