"""BatchNorm fusion: fold each eval-mode BatchNorm into the convolution before it.

A BatchNorm after a convolution is an affine map per channel; in eval mode it can be
folded into the convolution's weights and bias, which removes a pass over the
feature map. torch's ``fuse_conv_bn_eval`` does the arithmetic; this walks a network
and finds the pairs: consecutive (Conv2d, BatchNorm2d) in a Sequential (MobileNet's
Conv2dNormActivation, ResNet's trunk and downsample), and ``convK``/``bnK`` attribute
pairs (ResNet's blocks).
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``model`` with BatchNorms folded; and how many were."""
    fused = copy.deepcopy(model).eval()
    count = 0
    for module in list(fused.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = module._modules[a], module._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module._modules[a] = fuse_conv_bn_eval(conv, bn)
                    module._modules[b] = nn.Identity()
                    count += 1
        for name, child in list(module.named_children()):
            if name.startswith("conv") and isinstance(child, nn.Conv2d):
                bn_name = "bn" + name[4:]
                bn = getattr(module, bn_name, None)
                if isinstance(bn, nn.BatchNorm2d):
                    setattr(module, name, fuse_conv_bn_eval(child, bn))
                    setattr(module, bn_name, nn.Identity())
                    count += 1
    return fused, count
