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

from facepoints.errors import FacepointsError
from facepoints.models.info import IMAGENET_MEAN, IMAGENET_STD

# name -> (torchvision weights, feature channels). MobileNetV2 uses V1 weights: the
# ones ../shared/tools/seed-imagenet-weights makes available offline.
BACKBONES = {
    "resnet18": ("ResNet18_Weights.IMAGENET1K_V1", 512),
    "resnet34": ("ResNet34_Weights.IMAGENET1K_V1", 512),
    "resnet50": ("ResNet50_Weights.IMAGENET1K_V2", 2048),
    "mobilenet_v2": ("MobileNet_V2_Weights.IMAGENET1K_V1", 1280),
    "mobilenet_v3_small": ("MobileNet_V3_Small_Weights.IMAGENET1K_V1", 576),
    "mobilenet_v3_large": ("MobileNet_V3_Large_Weights.IMAGENET1K_V1", 960),
}


class ModelBuildError(FacepointsError, RuntimeError):
    pass


TRUNK_STRIDES = (32, 16)


def backbone_features(name: str, pretrained: bool, last_conv: bool = True, stride: int = 32) -> tuple[nn.Module, int]:
    """The convolutional trunk of a torchvision classifier (no pooling, no classifier),
    and its output channels. ``last_conv=False`` (MobileNets only) leaves out the final
    1x1 expansion convolution (MobileNetV2: 320 -> 1280 channels): a head on the 320
    channels before it costs far less at the same grid. ``stride=16`` ends the trunk
    after its last stride-16 block (MobileNetV2: 96 channels; ResNets: ``layer3``),
    which leaves out the stride-32 blocks and with them the final convolution: a grid
    twice as fine for less compute."""
    if stride not in TRUNK_STRIDES:
        raise ModelBuildError(f"trunk stride {stride} not supported; choose from {TRUNK_STRIDES}")
    if name not in BACKBONES:
        raise ModelBuildError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    weights_name, channels = BACKBONES[name]
    try:
        net = torchvision.models.get_model(name, weights=torchvision.models.get_weight(weights_name) if pretrained else None)
    except Exception as e:  # offline without cached weights, corrupt cache, ...
        raise ModelBuildError(
            f"cannot load ImageNet weights for {name} ({e.__class__.__name__}: {e}); "
            "set model.pretrained: false, or put the weights in the torch hub cache"
        ) from e
    if name.startswith("resnet"):
        if not last_conv:
            raise ModelBuildError(f"{name} has no final expansion convolution to leave out (last_conv: false "
                                  "is for the MobileNets)")
        trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    elif last_conv:
        trunk = net.features
    else:
        trunk = net.features[:-1]
        channels = net.features[-1][0].in_channels
    if stride != 32:
        trunk, channels = _cut_to_stride(trunk, stride)
    return trunk, channels


def _block_outputs(trunk: nn.Sequential) -> list[tuple[int, int]]:
    """(stride, channels) of each block's output of ``trunk`` (found by running a blank
    image; BatchNorm statistics stay as they were)."""
    x, out = torch.zeros(1, 3, 64, 64), []
    was_training = trunk.training
    trunk.eval()
    with torch.no_grad():
        for block in trunk:
            x = block(x)
            out.append((64 // x.shape[-1], int(x.shape[1])))
    trunk.train(was_training)
    return out


def _cut_to_stride(trunk: nn.Sequential, stride: int) -> tuple[nn.Sequential, int]:
    """The leading blocks of ``trunk`` whose output is at most ``stride`` times smaller
    than its input, and the channels they leave."""
    keep, channels = 0, 3
    for s, c in _block_outputs(trunk):
        if s > stride:
            break
        keep, channels = keep + 1, c
    return trunk[:keep], channels


def stride_taps(trunk: nn.Sequential, strides: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """For each of ``strides``, the index of the last block of ``trunk`` whose output is at
    that stride, and that output's channels."""
    taps = {s: (i, c) for i, (s, c) in enumerate(_block_outputs(trunk)) if s in strides}  # the last one wins
    missing = [s for s in strides if s not in taps]
    if missing:
        raise ModelBuildError(f"the trunk has no block at stride {missing[0]}")
    return tuple(taps[s][0] for s in strides), tuple(taps[s][1] for s in strides)


class PointVisibility(nn.Module):
    """A visibility logit per landmark from the trunk's finer feature maps sampled at the
    landmark itself (bilinear): what covers a point shows at a stride of 8 or 16 pixels,
    where the PIP grid's cell (32 pixels) mixes it with its neighbours. One shared layer,
    then a weight vector per landmark; the last weights start at zero, so a model that
    gains this module predicts exactly what it did before it learns."""

    def __init__(self, channels: int, num_points: int, input_size: int, hidden: int = 64):
        super().__init__()
        self.input_size = input_size
        self.shared = nn.Sequential(nn.Conv1d(channels, hidden, 1, bias=False), nn.BatchNorm1d(hidden),
                                    nn.ReLU(inplace=True))
        self.weight = nn.Parameter(torch.zeros(num_points, hidden))
        self.bias = nn.Parameter(torch.zeros(num_points))

    def forward(self, maps: tuple[torch.Tensor, ...], points: torch.Tensor) -> torch.Tensor:
        """``maps``: feature maps (B, C_i, H_i, W_i) of the whole crop; ``points`` (B, P, 2)
        in crop units. Returns (B, P) logits."""
        z = torch.cat([bilinear_at(m, points, self.input_size) for m in maps], 1)  # (B, C, P)
        return (self.shared(z) * self.weight.t().unsqueeze(0)).sum(1) + self.bias


def bilinear_at(fmap: torch.Tensor, points: torch.Tensor, input_size: int) -> torch.Tensor:
    """``fmap`` (B, C, H, W) over the whole crop read at ``points`` (B, P, 2, crop units) by
    bilinear interpolation, edges repeated: ``grid_sample(..., padding_mode="border",
    align_corners=False)``, written as a product with each point's interpolation weights
    (a tent of width 1 per axis), which ONNX Runtime runs in a third of its GridSample's time."""
    c, h, w = (int(v) for v in fmap.shape[1:])  # constants in an export (the input size is fixed)
    p = int(points.shape[1])
    px = points.to(fmap.dtype) * (input_size - 1) + 0.5  # input pixels
    tents = []
    for axis, n in ((0, w), (1, h)):
        u = (px[..., axis] * (n / input_size) - 0.5).clamp(0, n - 1)  # map pixel units (B, P)
        tents.append(torch.relu(1 - (u.unsqueeze(-1) - torch.arange(n, dtype=fmap.dtype, device=fmap.device)).abs()))
    weights = (tents[1].unsqueeze(-1) * tents[0].unsqueeze(-2)).reshape(-1, p, h * w)  # (B, P, H*W)
    return fmap.reshape(-1, c, h * w) @ weights.transpose(1, 2)


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
    """The classic recipe: global average pool, then ``Linear(C, 2 * P)``.

    Every head has the same three parts, so training and inference cannot drift apart:
    ``forward(feats)`` gives the raw output (what the loss sees), ``decode(raw)`` the
    landmarks (B, P, 2) in crop units, and ``loss(raw, target, coord_loss)`` encodes the
    target landmarks the way the head needs them and scores the raw output.
    """

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

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def loss(self, raw: torch.Tensor, target: torch.Tensor, coord_loss: nn.Module) -> torch.Tensor:
        return coord_loss(raw.float(), target)

    def init_mean_shape(self, mean_shape: torch.Tensor) -> None:
        """Start from the mean face: zero weights, bias = mean landmark positions."""
        with torch.no_grad():
            self.fc.weight.mul_(0.01)
            self.fc.bias.copy_(mean_shape.reshape(-1))


def grid_coordinates(coords: torch.Tensor, input_size: int, h: int, w: int) -> torch.Tensor:
    """Crop units (0..1 between corner pixel centres) -> continuous grid units of an
    h x w map over the crop: grid cell j covers input pixels [j*s, (j+1)*s) with
    s = input_size / w, so cell j's centre is at j + 0.5. Inverse: :func:`crop_coordinates`."""
    px = coords * (input_size - 1) + 0.5
    return torch.stack([px[..., 0] * (w / input_size), px[..., 1] * (h / input_size)], -1)


def crop_coordinates(grid: torch.Tensor, input_size: int, h: int, w: int) -> torch.Tensor:
    """The inverse of :func:`grid_coordinates`."""
    return (torch.stack([grid[..., 0] * (input_size / w), grid[..., 1] * (input_size / h)], -1) - 0.5) / (input_size - 1)


def render_heatmaps(coords: torch.Tensor, h: int, w: int, input_size: int, sigma: float = 1.5) -> torch.Tensor:
    """Gaussian heatmaps (B, P, h, w), peak 1, for coordinates in crop units: the
    heatmap head's training targets (the inverse of its pixel placement)."""
    g = grid_coordinates(coords, input_size, h, w) - 0.5  # heatmap pixel index units
    xs = torch.arange(w, device=coords.device, dtype=coords.dtype)
    ys = torch.arange(h, device=coords.device, dtype=coords.dtype)
    gx = torch.exp(-((xs.view(1, 1, w) - g[..., 0:1]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((ys.view(1, 1, h) - g[..., 1:2]) ** 2) / (2 * sigma**2))
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


def upsampler(channels: int, width: int, times: int) -> tuple[nn.Module, int]:
    """``times`` stride-2 deconvolutions (SimpleBaseline), and the channels they leave."""
    layers: list[nn.Module] = []
    c = channels
    for _ in range(times):
        layers += [nn.ConvTranspose2d(c, width, 4, stride=2, padding=1, bias=False),
                   nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        c = width
    return nn.Sequential(*layers), c


HEATMAP_DECODERS = ("soft", "local")


class HeatmapHead(nn.Module):
    """Heatmaps at 1/4 of the input (SimpleBaseline: three stride-2 deconvolutions),
    decoded to sub-pixel coordinates. ``decode="soft"``: a soft-argmax, the expectation
    of the pixel positions under ``softmax(beta * heatmap)`` (integral regression, Sun
    et al. 2018), for heads trained through their coordinates. ``"local"``: the
    expectation under the heatmap itself (negative values as 0) in a 5 x 5 window
    around its peak, for heads trained on target heatmaps (Adaptive Wing), whose
    values lie in [0, 1], where a softmax would be nearly flat.
    The raw output is the heatmaps: a heatmap loss (``on_heatmaps``) is compared with
    Gaussian targets rendered here, a coordinate loss with the decoded landmarks.
    """

    def __init__(self, channels: int, num_points: int, input_size: int, width: int = 128,
                 beta: float = 1.0, coordconv: bool = False, upsamples: int = 3, decode: str = "soft"):
        super().__init__()
        if decode not in HEATMAP_DECODERS:
            raise ModelBuildError(f"unknown heatmap decoding {decode!r}; available: {', '.join(HEATMAP_DECODERS)}")
        self.num_points, self.input_size, self.beta, self.decode_mode = num_points, input_size, beta, decode
        up, c = upsampler(channels, width, upsamples)
        self.deconv = nn.Sequential(coord_conv(channels), *up) if coordconv else up
        self.final = nn.Conv2d(c, num_points, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.final(self.deconv(feats))

    def decode(self, hm: torch.Tensor) -> torch.Tensor:
        b, p, h, w = hm.shape
        if self.decode_mode == "soft":
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
        # expected cell centre (j + 0.5 in grid units), then back to crop units
        gx = (prob.sum(2) * (torch.arange(w, device=hm.device, dtype=hm.dtype) + 0.5)).sum(-1)
        gy = (prob.sum(3) * (torch.arange(h, device=hm.device, dtype=hm.dtype) + 0.5)).sum(-1)
        return crop_coordinates(torch.stack([gx, gy], dim=-1), self.input_size, h, w)

    def loss(self, raw: torch.Tensor, target: torch.Tensor, coord_loss: nn.Module) -> torch.Tensor:
        raw = raw.float()
        if getattr(coord_loss, "on_heatmaps", False):
            _, _, h, w = raw.shape
            return coord_loss(raw, render_heatmaps(target, h, w, self.input_size))
        return coord_loss(self.decode(raw), target)

    def init_mean_shape(self, mean_shape: torch.Tensor) -> None:
        """Heatmaps need no mean-shape start: every pixel begins equally likely."""


PIP_STRIDES = (32, 16)


class PIPHead(nn.Module):
    """Pixel-in-Pixel regression (PIPNet, Jin et al. 2021, arXiv 2003.03771).

    On the trunk's grid (stride 32, or 16 from a stride-16 trunk or after one stride-2
    deconvolution of a stride-32 one), five
    1x1 convolutions give per landmark: a score map (which cell holds it), x and y
    offsets within that cell, and x and y offsets of its ``neighbours`` nearest
    landmarks of the mean shape, relative to the same cell. Decoding takes the best
    cell of every landmark, reads its own offset there, and averages each landmark's
    own prediction with those of the landmarks that count it as a neighbour.
    Everything is in grid units (a cell is 1); the neighbour table is a buffer made
    from the training mean shape (``init_mean_shape``) and saved with the weights.
    Training (``loss``): MSE of the score map against a one-hot target, weighted by
    ``score_weight`` (10 in the paper), plus the coordinate loss (L1 in the paper) on
    the offsets read at the target cell.
    """

    def __init__(self, channels: int, num_points: int, input_size: int, neighbours: int = 10,
                 stride: int = 32, width: int = 256, score_weight: float = 10.0, trunk_stride: int = 32,
                 trust: bool = False, trust_kernel: int = 1, trust_taps: tuple[int, ...] = (),
                 tap_channels: tuple[int, ...] = ()):
        super().__init__()
        if stride not in PIP_STRIDES or stride > trunk_stride:
            raise ModelBuildError(f"PIP head: stride {stride} not supported on a stride-{trunk_stride} trunk; "
                                  f"choose from {tuple(s for s in PIP_STRIDES if s <= trunk_stride)}")
        if neighbours < 1 or num_points < 2:
            raise ModelBuildError(f"PIP head: needs at least 2 points and 1 neighbour (got {num_points}, {neighbours})")
        neighbours = min(neighbours, num_points - 1)  # a scheme of P points has P - 1 others
        self.num_points, self.input_size, self.k, self.score_weight = num_points, input_size, neighbours, score_weight
        self.up, c = upsampler(channels, width, 1 if stride < trunk_stride else 0)  # stride 16 on a stride-32 trunk
        self.score = nn.Conv2d(c, num_points, 1)
        self.offset = nn.Conv2d(c, 2 * num_points, 1)
        self.neighbour_offset = nn.Conv2d(c, 2 * num_points * neighbours, 1)
        for conv in (self.score, self.offset, self.neighbour_offset):
            nn.init.normal_(conv.weight, std=0.001)
            nn.init.zeros_(conv.bias)
        # neighbours[i, k]: the k-th nearest landmark to landmark i in the mean shape
        self.register_buffer("neighbours", torch.stack(
            [torch.tensor([(i + 1 + j) % num_points for j in range(neighbours)]) for i in range(num_points)]))
        # trust: per landmark and cell, a log error scale and a visibility logit, from the
        # grid's features with their gradient stopped (the landmarks learn as without it);
        # trust_kernel 3 lets each cell's outputs see its eight neighbours too
        if trust_kernel not in (1, 3):
            raise ModelBuildError(f"PIP head: trust kernel {trust_kernel} not supported; choose 1 or 3")
        self.trust = trust
        if trust:
            self.trust_branch = nn.Sequential(nn.Conv2d(c, 64, trust_kernel, padding=trust_kernel // 2, bias=False),
                                              nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                              nn.Conv2d(64, 2 * num_points, 1))
            nn.init.zeros_(self.trust_branch[-1].weight)
            nn.init.zeros_(self.trust_branch[-1].bias)
        # trust_taps: trunk blocks whose outputs LandmarkNet.raw hands over (detached) for
        # PointVisibility, which adds its logit to the grid's
        self.taps = tuple(trust_taps) if trust else ()
        if self.taps:
            self.trust_points = PointVisibility(sum(tap_channels), num_points, input_size)

    def trust_modules(self) -> list[nn.Module]:
        """What a trust-only run trains."""
        return [self.trust_branch] + ([self.trust_points] if self.taps else [])

    def forward(self, feats: torch.Tensor, taps: tuple[torch.Tensor, ...] = ()) -> tuple[torch.Tensor, ...]:
        x = self.up(feats)
        # the grid as plain ints: in an ONNX export they are constants (the input size is
        # fixed) and only the batch stays dynamic, which keeps shape arithmetic out of the graph
        h, w = (int(v) for v in x.shape[-2:])
        p, k = self.num_points, self.k
        raw = (self.score(x), self.offset(x).view(-1, p, 2, h, w), self.neighbour_offset(x).view(-1, p, k, 2, h, w))
        if self.trust:
            raw += (self.trust_branch(x.detach()).view(-1, 2, p, h, w),) + tuple(t.detach() for t in taps)
        return raw

    def _best_cells(self, score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each landmark's best cell of ``score`` (B, P, H, W): as a one-hot row (B, P, HW)
        (reading a map there is a multiply-and-sum, or a product with the map) and as its
        (x, y) in grid units (B, P, 2)."""
        p, h, w = (int(v) for v in score.shape[1:])  # constants in an export (the input size is fixed)
        dt = score.dtype
        onehot = nn.functional.one_hot(score.reshape(-1, p, h * w).argmax(-1), h * w).to(dt)   # (B, P, HW)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=dt, device=score.device),
                                torch.arange(w, dtype=dt, device=score.device), indexing="ij")
        return onehot, onehot @ torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)

    def _merge(self, cell: torch.Tensor, own: torch.Tensor, nb_at: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Landmarks in crop units from each landmark's cell (B, P, 2), its own offset there
        (B, P, 2) and its neighbours' offsets there (B, P, K*2): each landmark's own
        position averaged with those the landmarks that count it as a neighbour give it."""
        p, k, dt = self.num_points, self.k, cell.dtype
        own = cell + own
        nb_pos = (cell.unsqueeze(2) + nb_at.reshape(-1, p, k, 2)).reshape(-1, p * k, 2)  # positions of neighbours
        # member[i*K + k, j] = 1 where landmark i's k-th neighbour is j
        member = (self.neighbours.reshape(-1, 1) == torch.arange(p, device=cell.device)).to(dt)
        merged = (own + member.t() @ nb_pos) / (1 + member.sum(0)).view(1, p, 1)
        return crop_coordinates(merged, self.input_size, h, w)

    def decode(self, raw) -> torch.Tensor:
        score, offset, nb = raw[:3]
        p, h, w = (int(v) for v in score.shape[1:])  # constants in an export, as in forward
        onehot, cell = self._best_cells(score)
        own = (offset.reshape(-1, p, 2, h * w) * onehot.unsqueeze(2)).sum(-1)            # (B, P, 2)
        nb_at = (nb.reshape(-1, p, self.k * 2, h * w) * onehot.unsqueeze(2)).sum(-1)     # (B, P, K*2)
        return self._merge(cell, own, nb_at, h, w)

    def infer(self, feats: torch.Tensor, taps: tuple[torch.Tensor, ...] = (), trust: bool = False):
        """What ``decode(forward(feats))`` gives (and with ``trust``, ``read_trust`` too), computed
        for inference: the offset convolutions are 1 x 1, so each landmark's offsets at its
        best cell are its own weights applied to the grid's features at that cell alone;
        the dense maps, of which decoding reads one cell per landmark, are never made (for the
        neighbour offsets, 2 K values per landmark and cell: most of the head's time).
        Returns the landmarks (B, P, 2), or with ``trust`` (landmarks, error scale, visibility logit)."""
        x = self.up(feats)
        c, h, w = (int(v) for v in x.shape[1:])
        p, k = self.num_points, self.k
        onehot, cell = self._best_cells(self.score(x))
        x_at = onehot @ x.reshape(-1, c, h * w).transpose(1, 2)                           # (B, P, C)
        weight = torch.cat([self.offset.weight.reshape(p, 2, c),
                            self.neighbour_offset.weight.reshape(p, 2 * k, c)], 1)        # (P, 2 + 2K, C)
        bias = torch.cat([self.offset.bias.reshape(p, 2), self.neighbour_offset.bias.reshape(p, 2 * k)], 1)
        at = (x_at.transpose(0, 1) @ weight.transpose(1, 2)).transpose(0, 1) + bias       # (B, P, 2 + 2K)
        points = self._merge(cell, at[..., :2], at[..., 2:], h, w)
        if not trust:
            return points
        hidden = self.trust_branch[:-1](x)                                                 # (B, 64, H, W)
        last = self.trust_branch[-1]
        hid_at = onehot @ hidden.reshape(-1, int(hidden.shape[1]), h * w).transpose(1, 2)  # (B, P, 64)
        tw = last.weight.reshape(2, p, -1).transpose(0, 1)                                 # (P, 2, 64)
        t_at = (hid_at.transpose(0, 1) @ tw.transpose(1, 2)).transpose(0, 1) + last.bias.reshape(2, p).t()
        return (points,) + self._trust_from(t_at[..., 0], t_at[..., 1], taps, points, h, w)

    def encode(self, target: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Targets for crop-unit landmarks (B, P, 2): the flat index of each landmark's
        cell (B, P), its offset in that cell (B, P, 2), and its neighbours' positions
        relative to that cell (B, P, K, 2), all in grid units."""
        g = grid_coordinates(target, self.input_size, h, w)
        lim = torch.tensor([w - 1, h - 1], device=g.device)
        cell = torch.minimum(torch.floor(g).clamp(min=0).long(), lim)                # points off the crop: edge cells
        idx = cell[..., 1] * w + cell[..., 0]
        nb = g[:, self.neighbours] - cell.to(g.dtype).unsqueeze(2)
        return idx, g - cell.to(g.dtype), nb

    def read_trust(self, raw, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(error scale in crop units, visibility logit), each (B, P), read at each
        landmark's best cell (where ``decode`` reads its offsets). The scale ``b`` is that
        of ``p(e) ~ e exp(-e / b)``, the law of a 2-D Laplace-like radial error (mean 2b).
        With trust taps the visibility logit adds :class:`PointVisibility`'s at
        ``points``, the landmarks ``decode`` gives for ``raw``."""
        score, trust = raw[0], raw[3]
        p, h, w = (int(v) for v in score.shape[1:])  # constants in an export, as in decode
        onehot, _ = self._best_cells(score)
        at = (trust.reshape(-1, 2, p, h * w) * onehot.unsqueeze(1).to(trust.dtype)).sum(-1)       # (B, 2, P)
        return self._trust_from(at[:, 0], at[:, 1], raw[4:], points, h, w)

    def _trust_from(self, log_scale, logit, taps, points, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The trust outputs from the grid's values at each landmark's cell, (B, P) each."""
        if self.taps:
            logit = logit + self.trust_points(taps, points.detach())
        return torch.exp(log_scale.clamp(-12, 6)) / max(h, w), logit  # a cell is 1 / grid side

    def trust_loss(self, raw, target: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """The trust outputs' loss: the negative log-likelihood of each landmark's decoded
        error (crop units, its gradient stopped) under the predicted scale, plus the binary
        cross-entropy of the visibility logit against ``visible`` (B, P; 1 seen, 0 hidden)."""
        with torch.no_grad():
            points = self.decode(raw)
            err = (points.float() - target.float()).norm(dim=-1)
        scale, logit = (t.float() for t in self.read_trust(raw, points))
        nll = (err / scale + 2 * torch.log(scale)).mean()
        bce = nn.functional.binary_cross_entropy_with_logits(logit, visible.float())
        return 0.1 * (nll + bce)

    def loss(self, raw, target: torch.Tensor, coord_loss: nn.Module) -> torch.Tensor:
        score, offset, nb = (t.float() for t in raw[:3])
        b, p, h, w = score.shape
        k = self.k
        idx, off_t, nb_t = self.encode(target, h, w)
        onehot = torch.zeros(b, p, h * w, device=score.device).scatter_(2, idx.unsqueeze(-1), 1.0)
        score_loss = torch.nn.functional.mse_loss(score.reshape(b, p, h * w), onehot)
        off = offset.reshape(b, p, 2, h * w).gather(3, idx.view(b, p, 1, 1).expand(b, p, 2, 1)).squeeze(3)
        nb_at = nb.reshape(b, p, k, 2, h * w).gather(4, idx.view(b, p, 1, 1, 1).expand(b, p, k, 2, 1)).squeeze(4)
        return self.score_weight * score_loss + coord_loss(off, off_t) + coord_loss(nb_at, nb_t)

    def init_mean_shape(self, mean_shape: torch.Tensor) -> None:
        """The neighbour table from the mean shape: each landmark's ``k`` nearest others."""
        d = torch.cdist(mean_shape.double(), mean_shape.double())
        d.fill_diagonal_(float("inf"))
        self.neighbours.copy_(d.argsort(1)[:, :self.k])


class LandmarkNet(nn.Module):
    def __init__(self, trunk: nn.Module, head: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def raw(self, x: torch.Tensor):
        """The head's raw output, what its ``loss`` scores (training; see :class:`RawOutputs`)."""
        feats, taps = self._features(x)
        return self.head(feats, taps) if taps else self.head(feats)

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The trunk's output and its outputs at the head's taps (if any)."""
        x = (x - self.mean) / self.std
        taps = getattr(self.head, "taps", ())
        if not taps:
            return self.trunk(x), ()
        kept = []
        for i, block in enumerate(self.trunk):
            x = block(x)
            if i in taps:
                kept.append(x)
        return x, tuple(kept)

    #: inference reads each landmark's offsets at its best cell alone (PIPHead.infer); False:
    #: it decodes the dense maps, as training does (int8 exports: a quantised 1 x 1
    #: convolution over the grid is smaller and faster than fp32 products per landmark)
    sparse_decoding: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Landmarks (B, P, 2) in crop units."""
        if self.sparse_decoding and hasattr(self.head, "infer"):
            return self.head.infer(self._features(x)[0])
        return self.head.decode(self.raw(x))

    @property
    def has_trust(self) -> bool:
        return bool(getattr(self.head, "trust", False))

    def with_trust(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Landmarks (B, P, 2) in crop units and, per landmark, (error scale in crop units,
        visibility probability) as (B, P, 2): what a model with a trust branch exports."""
        if self.sparse_decoding:
            points, scale, logit = self.head.infer(*self._features(x), trust=True)
        else:
            raw = self.raw(x)
            points = self.head.decode(raw)
            scale, logit = self.head.read_trust(raw, points)
        return points, torch.stack([scale, torch.sigmoid(logit)], -1)


class TrustOutputs(nn.Module):
    """A view of a LandmarkNet with a trust branch whose ``forward`` is its ``with_trust``
    (the module exports trace)."""

    def __init__(self, net: LandmarkNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net.with_trust(x)


class RawOutputs(nn.Module):
    """A view of a LandmarkNet whose ``forward`` is its ``raw``: what training wraps in
    DDP, so that gradient synchronisation sees the call that the loss is computed on."""

    def __init__(self, net: LandmarkNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net.raw(x)


HEADS = ("regression", "heatmap", "pip")
TRUST_TAP_STRIDES = (8, 16)  # the trunk outputs PointVisibility samples


def build_model(backbone: str, num_points: int, head: str = "regression", pretrained: bool = False,
                dropout: float = 0.0, coordconv: bool = False, input_size: int = 128,
                heatmap_beta: float = 1.0, heatmap_decode: str = "soft", pip_neighbours: int = 10,
                pip_stride: int = 32, pip_score_weight: float = 10.0, pip_trust: bool = False, last_conv: bool = True,
                trunk_stride: int = 32, pip_trust_kernel: int = 1, pip_trust_points: bool = False) -> LandmarkNet:
    """A landmark network in one call. ``input_size`` matters only to the heatmap and
    PIP heads (to place their grid cells in the crop); ``last_conv`` and ``trunk_stride``:
    see :func:`backbone_features` (heatmaps stay at 1/4 of the input on either trunk)."""
    trunk, channels = backbone_features(backbone, pretrained, last_conv, trunk_stride)
    if head == "regression":
        return LandmarkNet(trunk, RegressionHead(channels, num_points, dropout, coordconv))
    if head == "heatmap":
        return LandmarkNet(trunk, HeatmapHead(channels, num_points, input_size, beta=heatmap_beta, coordconv=coordconv,
                                              upsamples=3 if trunk_stride == 32 else 2, decode=heatmap_decode))
    if head == "pip":
        taps, tap_channels = stride_taps(trunk, TRUST_TAP_STRIDES) if pip_trust and pip_trust_points else ((), ())
        return LandmarkNet(trunk, PIPHead(channels, num_points, input_size, neighbours=pip_neighbours,
                                          stride=pip_stride, score_weight=pip_score_weight, trunk_stride=trunk_stride,
                                          trust=pip_trust, trust_kernel=pip_trust_kernel, trust_taps=taps,
                                          tap_channels=tap_channels))
    raise ModelBuildError(f"unknown head {head!r}; available: {', '.join(HEADS)}")
