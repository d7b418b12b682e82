"""State dicts in torchvision's format (its key names, order and shapes),
filled with random values, for the tests of the backbones and the loader.

Written out from torchvision's layout (``vgg16``, ``vgg16_bn``: one
``features`` Sequential and a ``classifier``; ``resnet50``/``resnet101``:
``conv1``, ``bn1``, ``layerN.B.{conv,bn}{1,2,3}``, ``downsample.{0,1}``,
``fc``), independently of ``utils.models``. ``bn`` is batch norm at
evaluation over such a state dict.
"""

import math

import torch
import torch.nn.functional as F

# torchvision's vgg16 "features" (configuration D): channels, M = max-pool.
CFG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
         512, 512, 512, "M", 512, 512, 512, "M"]  # fmt: skip
RESNET_BLOCKS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}


def ch(c, width):
    return max(1, round(c * width))


def random_bn(sd, prefix, c, g, gamma=1.0, num_batches=True):
    sd[f"{prefix}.weight"] = gamma * (0.5 + torch.rand(c, generator=g))
    sd[f"{prefix}.bias"] = 0.1 * torch.randn(c, generator=g)
    sd[f"{prefix}.running_mean"] = 0.1 * torch.randn(c, generator=g)
    sd[f"{prefix}.running_var"] = 0.5 + torch.rand(c, generator=g)
    if num_batches:
        sd[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)


def he(shape, g):
    fan_in = math.prod(shape[1:])
    return torch.randn(*shape, generator=g) * math.sqrt(2 / fan_in)


def vgg_state_dict(width=1.0, batch_norm=False, seed=0, num_batches=True):
    """torchvision vgg16 / vgg16_bn keys and shapes, random values."""
    g = torch.Generator().manual_seed(seed)
    sd, index, cin = {}, 0, 3
    for v in CFG_D:
        if v == "M":
            index += 1
            continue
        cout = ch(v, width)
        sd[f"features.{index}.weight"] = he((cout, cin, 3, 3), g)
        sd[f"features.{index}.bias"] = 0.1 * torch.randn(cout, generator=g)
        if batch_norm:
            random_bn(sd, f"features.{index + 1}", cout, g, num_batches=num_batches)
        index += 3 if batch_norm else 2
        cin = cout
    fc = ch(4096, width)
    for key, (n_out, n_in) in {"classifier.0": (fc, cin * 49),
                               "classifier.3": (fc, fc),
                               "classifier.6": (1000, fc)}.items():
        sd[f"{key}.weight"] = he((n_out, n_in), g)
        sd[f"{key}.bias"] = 0.1 * torch.randn(n_out, generator=g)
    return sd


def resnet_state_dict(depth=50, width=1.0, seed=0, num_batches=True):
    """torchvision resnet50/101 keys and shapes (with fc), random values."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    cin = ch(64, width)
    sd["conv1.weight"] = he((cin, 3, 7, 7), g)
    random_bn(sd, "bn1", cin, g, num_batches=num_batches)
    for stage, blocks in enumerate(RESNET_BLOCKS[depth], start=1):
        planes = ch(64 * 2 ** (stage - 1), width)
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            sd[f"{p}.conv1.weight"] = he((planes, cin, 1, 1), g)
            random_bn(sd, f"{p}.bn1", planes, g, num_batches=num_batches)
            sd[f"{p}.conv2.weight"] = he((planes, planes, 3, 3), g)
            random_bn(sd, f"{p}.bn2", planes, g, num_batches=num_batches)
            sd[f"{p}.conv3.weight"] = he((4 * planes, planes, 1, 1), g)
            # a small last scale keeps the residual sum from growing block by block
            random_bn(sd, f"{p}.bn3", 4 * planes, g, gamma=0.2,
                      num_batches=num_batches)
            if b == 0:
                sd[f"{p}.downsample.0.weight"] = he((4 * planes, cin, 1, 1), g)
                random_bn(sd, f"{p}.downsample.1", 4 * planes, g,
                          num_batches=num_batches)
            cin = 4 * planes
    sd["fc.weight"] = 0.01 * torch.randn(1000, cin, generator=g)
    sd["fc.bias"] = torch.zeros(1000)
    return sd


def bn(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"],
                        sd[f"{p}.weight"], sd[f"{p}.bias"], False, 0.0, 1e-5)
