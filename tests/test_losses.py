import math

import pytest
import torch

from facepoints.models.losses import AdaptiveWingLoss, WingLoss, build_loss
from facepoints.models.network import build_model, render_heatmaps


def t(*v):
    return torch.tensor(v, dtype=torch.float64)


def test_l1_l2_smooth_l1_by_hand():
    p, y = t(0.0, 0.5), t(0.2, 0.0)
    assert build_loss("l1")(p, y).item() == pytest.approx(0.35)
    assert build_loss("l2")(p, y).item() == pytest.approx((0.04 + 0.25) / 2)
    # smooth L1 with beta 0.01: both errors are beyond beta -> |x| - beta/2
    assert build_loss("smooth_l1")(p, y).item() == pytest.approx((0.2 - 0.005 + 0.5 - 0.005) / 2)


def test_wing_by_hand_and_continuous_at_w():
    loss = WingLoss(w=10, eps=2, scale=1)
    # |x| = 1 < w: 10 ln(1 + 1/2)
    assert loss(t(1.0), t(0.0)).item() == pytest.approx(10 * math.log(1.5))
    # |x| = 20 > w: 20 - C, C = 10 - 10 ln 6
    assert loss(t(20.0), t(0.0)).item() == pytest.approx(20 - (10 - 10 * math.log(6)))
    below, above = loss(t(10 - 1e-9), t(0.0)).item(), loss(t(10 + 1e-9), t(0.0)).item()
    assert below == pytest.approx(above, abs=1e-6)


def test_wing_scale_converts_crop_units_to_pixels():
    assert WingLoss(scale=64)(t(1 / 64), t(0.0)).item() == pytest.approx(10 * math.log(1.5))


def test_awing_by_hand():
    aw = AdaptiveWingLoss()
    # y = 0, p = 0.2 (< theta): 14 ln(1 + 0.2^2.1)
    assert aw.pixel_loss(t(0.2), t(0.0)).item() == pytest.approx(14 * math.log(1 + 0.2**2.1))
    # y = 1, p = 0.25 (d = 0.75 > theta): A d - C with alpha - y = 1.1
    r, pw = 0.5, 1.1
    a = 14 / (1 + r**pw) * pw * r ** (pw - 1)
    c = 0.5 * a - 14 * math.log(1 + r**pw)
    assert aw.pixel_loss(t(0.25), t(1.0)).item() == pytest.approx(a * 0.75 - c)


@pytest.mark.parametrize("y", [0.0, 0.3, 0.7, 1.0])
def test_awing_value_and_slope_continuous_at_theta(y):
    aw = AdaptiveWingLoss()
    e = 1e-7
    lo = torch.tensor([y + 0.5 - e], dtype=torch.float64, requires_grad=True)
    hi = torch.tensor([y + 0.5 + e], dtype=torch.float64, requires_grad=True)
    yl = t(y)
    vl, vh = aw.pixel_loss(lo, yl), aw.pixel_loss(hi, yl)
    assert vl.item() == pytest.approx(vh.item(), abs=1e-5)
    vl.backward()
    vh.backward()
    assert lo.grad.item() == pytest.approx(hi.grad.item(), rel=1e-4)


def test_awing_weight_map_weighs_pixels_near_landmarks():
    aw = AdaptiveWingLoss(weight=10)
    target = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    target[0, 0, 2, 2] = 1.0
    pred = torch.full_like(target, 0.1)
    base = aw.pixel_loss(pred, target)
    w = torch.ones_like(target)
    w[0, 0, 1:4, 1:4] = 11  # 3x3 dilation of the peak
    assert aw(pred, target).item() == pytest.approx((base * w).mean().item())


def test_heatmap_head_decodes_rendered_targets_to_their_coordinates():
    coords = torch.tensor([[[0.3, 0.6], [0.71, 0.2]]])
    hm = render_heatmaps(coords, 16, 16, 64, sigma=1.5)
    assert hm.shape == (1, 2, 16, 16) and hm.max() <= 1.0
    head = build_model("mobilenet_v3_small", 2, head="heatmap", input_size=64, heatmap_beta=10.0).head
    head.final = torch.nn.Identity()
    head.deconv = torch.nn.Identity()
    # sub-pixel: within half an input pixel, though a heatmap pixel is 4 input pixels
    torch.testing.assert_close(head.decode(head(hm)), coords, atol=0.5 / 63, rtol=0)


def test_coordconv_and_heatmap_models_run():
    for kw in ({"head": "regression", "coordconv": True}, {"head": "heatmap", "coordconv": True, "input_size": 64}):
        m = build_model("mobilenet_v3_small", 5, **kw).eval()
        assert m(torch.rand(2, 3, 64, 64)).shape == (2, 5, 2)


def test_local_decoding_reads_target_style_heatmaps_that_a_flat_softmax_cannot():
    """Heatmaps trained on Adaptive Wing targets peak at 1 over a ~0 background: the
    default soft-argmax (beta 1) is then nearly uniform and pulls every point to the
    middle; local decoding finds the peak to sub-pixel accuracy, also with noise."""
    coords = torch.tensor([[[0.3, 0.6], [0.71, 0.2]]])
    hm = render_heatmaps(coords, 16, 16, 64, sigma=1.5)
    hm = hm + 0.02 * torch.randn(hm.shape, generator=torch.Generator().manual_seed(0))
    heads = {d: build_model("mobilenet_v3_small", 2, head="heatmap", input_size=64, heatmap_decode=d).head
             for d in ("soft", "local")}
    for h in heads.values():
        h.final = torch.nn.Identity()
        h.deconv = torch.nn.Identity()
    torch.testing.assert_close(heads["local"].decode(hm), coords, atol=1.0 / 63, rtol=0)
    assert (heads["soft"].decode(hm) - coords).abs().max() > 0.1  # dragged towards 0.5
    with pytest.raises(Exception, match="decoding"):
        build_model("mobilenet_v3_small", 2, head="heatmap", heatmap_decode="argmax")
