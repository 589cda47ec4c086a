"""Landmark networks: a torchvision backbone chosen by name and a head.

The network takes an RGB crop as floats in [0, 1] (N, 3, S, S), normalises it itself
(ImageNet mean/std, stored as buffers so exports carry them) and returns landmarks
(N, P, 2) in crop units: (0, 0) is the centre of the top-left pixel, (1, 1) of the
bottom-right one.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# name -> (builder, weights enum.member, feature channels). MobileNetV2 uses V1
# weights: the ones ../shared/tools/seed-imagenet-weights makes available offline.
BACKBONES = {
    "resnet18": ("resnet18", "ResNet18_Weights.IMAGENET1K_V1", 512),
    "resnet34": ("resnet34", "ResNet34_Weights.IMAGENET1K_V1", 512),
    "resnet50": ("resnet50", "ResNet50_Weights.IMAGENET1K_V2", 2048),
    "mobilenet_v2": ("mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1", 1280),
    "mobilenet_v3_small": ("mobilenet_v3_small", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", 576),
    "mobilenet_v3_large": ("mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V1", 960),
}


class ModelBuildError(RuntimeError):
    pass


def backbone_features(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    """The convolutional trunk of a torchvision classifier (no pooling, no classifier)."""
    if name not in BACKBONES:
        raise ModelBuildError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    fn_name, weights_name, channels = BACKBONES[name]
    enum_name, member = weights_name.split(".")
    weights = getattr(getattr(torchvision.models, enum_name), member) if pretrained else None
    try:
        net = getattr(torchvision.models, fn_name)(weights=weights)
    except Exception as e:  # offline without cached weights, corrupt cache, ...
        raise ModelBuildError(
            f"cannot load ImageNet weights for {name} ({e.__class__.__name__}: {e}); "
            "set model.pretrained: false, or put the weights in the torch hub cache"
        ) from e
    if name.startswith("resnet"):
        trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    else:
        trunk = net.features
    return trunk, channels


class AddCoords(nn.Module):
    """CoordConv (Liu et al. 2018): append x and y coordinate channels in [-1, 1] so
    that the following convolution can tell where it is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
        return torch.cat([x, xs, ys], dim=1)


def coord_conv(channels: int) -> nn.Module:
    return nn.Sequential(AddCoords(), nn.Conv2d(channels + 2, channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class RegressionHead(nn.Module):
    """The classic recipe: global average pool, then ``Linear(C, 2 * P)``."""

    def __init__(self, channels: int, num_points: int, dropout: float = 0.0, coordconv: bool = False):
        super().__init__()
        self.num_points = num_points
        self.coords = coord_conv(channels) if coordconv else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, 2 * num_points)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.drop(torch.flatten(self.pool(self.coords(feats)), 1))
        return self.fc(x).view(-1, self.num_points, 2)

    def init_mean_shape(self, mean_shape: torch.Tensor) -> None:
        """Start from the mean face: zero weights, bias = mean landmark positions."""
        with torch.no_grad():
            self.fc.weight.mul_(0.01)
            self.fc.bias.copy_(mean_shape.reshape(-1))


HEATMAP_DECODERS = ("soft", "local")


class HeatmapHead(nn.Module):
    """Heatmaps at 1/4 of the input (SimpleBaseline: three stride-2 deconvolutions),
    decoded to sub-pixel coordinates. ``decode="soft"``: a soft-argmax, the expectation
    of the pixel positions under ``softmax(beta * heatmap)`` (integral regression, Sun
    et al. 2018), for heads trained through their coordinates. ``"local"``: the
    expectation under the heatmap itself (negative values as 0) in a 5 x 5 window
    around its peak, for heads trained on target heatmaps (Adaptive Wing), whose
    values lie in [0, 1], where a softmax would be nearly flat.
    The last heatmaps stay on ``self.heatmaps`` for heatmap losses (Adaptive Wing).
    """

    def __init__(self, channels: int, num_points: int, input_size: int, width: int = 128,
                 beta: float = 1.0, coordconv: bool = False, upsamples: int = 3, decode: str = "soft"):
        super().__init__()
        if decode not in HEATMAP_DECODERS:
            raise ModelBuildError(f"unknown heatmap decoding {decode!r}; available: {', '.join(HEATMAP_DECODERS)}")
        self.num_points, self.input_size, self.beta, self.decode = num_points, input_size, beta, decode
        layers: list[nn.Module] = [coord_conv(channels)] if coordconv else []
        c = channels
        for _ in range(upsamples):
            layers += [nn.ConvTranspose2d(c, width, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c = width
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(width, num_points, 1)
        self.heatmaps: torch.Tensor | None = None

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        hm = self.final(self.deconv(feats))
        self.heatmaps = hm
        b, p, h, w = hm.shape
        if self.decode == "soft":
            prob = torch.softmax(hm.reshape(b, p, h * w) * self.beta, dim=-1).reshape(b, p, h, w)
        else:  # "local": the heatmap's own mass in a 5 x 5 window around its peak
            peak = hm.reshape(b, p, h * w).argmax(-1)
            px, py = (peak % w).to(hm.dtype), torch.div(peak, w, rounding_mode="floor").to(hm.dtype)
            cols = torch.arange(w, device=hm.device, dtype=hm.dtype)
            rows = torch.arange(h, device=hm.device, dtype=hm.dtype)
            near = (((cols - px[..., None]).abs() <= 2)[:, :, None, :]
                    & ((rows - py[..., None]).abs() <= 2)[:, :, :, None])
            mass = torch.relu(hm) * near + 1e-6 * near  # an all-negative window falls back to its centre
            prob = mass / mass.sum((2, 3), keepdim=True)
        # heatmap pixel j covers input pixels [j*s, (j+1)*s): its centre is (j+0.5)*s-0.5
        sx, sy = self.input_size / w, self.input_size / h
        gx = ((torch.arange(w, device=hm.device, dtype=hm.dtype) + 0.5) * sx - 0.5) / (self.input_size - 1)
        gy = ((torch.arange(h, device=hm.device, dtype=hm.dtype) + 0.5) * sy - 0.5) / (self.input_size - 1)
        x = (prob.sum(2) * gx).sum(-1)
        y = (prob.sum(3) * gy).sum(-1)
        return torch.stack([x, y], dim=-1)

    def init_mean_shape(self, mean_shape: torch.Tensor) -> None:
        """Heatmaps need no mean-shape start: every pixel begins equally likely."""


class LandmarkNet(nn.Module):
    def __init__(self, trunk: nn.Module, head: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk((x - self.mean) / self.std))


HEADS = ("regression", "heatmap")


def build_model(backbone: str, num_points: int, head: str = "regression", pretrained: bool = False,
                dropout: float = 0.0, coordconv: bool = False, input_size: int = 128,
                heatmap_beta: float = 1.0, heatmap_decode: str = "soft") -> LandmarkNet:
    """A landmark network in one call. ``input_size`` matters only to the heatmap head
    (to place heatmap pixels in the crop)."""
    trunk, channels = backbone_features(backbone, pretrained)
    if head == "regression":
        return LandmarkNet(trunk, RegressionHead(channels, num_points, dropout, coordconv))
    if head == "heatmap":
        return LandmarkNet(trunk, HeatmapHead(channels, num_points, input_size, beta=heatmap_beta, coordconv=coordconv,
                                                  decode=heatmap_decode))
    raise ModelBuildError(f"unknown head {head!r}; available: {', '.join(HEADS)}")
