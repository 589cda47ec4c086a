import pytest
import torch
from torch import nn

from facepoints.models.network import build_model
from facepoints.optimize.fuse import fuse_batchnorm


def _randomise_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet18", "mobilenet_v3_small"])
def test_fusion_removes_every_batchnorm_and_keeps_the_output(backbone):
    torch.manual_seed(0)
    model = _randomise_bn(build_model(backbone, 68))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    fused, count = fuse_batchnorm(model)
    assert count == n_bn
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        ref, out = model(x), fused(x)
    # landmarks in crop units: 1e-5 of a 96 px crop is 0.001 px
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "the original is left alone"
