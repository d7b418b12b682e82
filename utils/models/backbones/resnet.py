"""ResNet-50 and ResNet-101: DeepLabV3+'s backbone (chapter 07) and the body
of Mask R-CNN's FPN (chapter 08).

He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR
2016, https://arxiv.org/abs/1512.03385

A 7x7 stride-2 convolution and a 3x3 stride-2 max-pool (the stem, stride 4),
then four stages (``layer1`` .. ``layer4``) of bottleneck blocks: 1x1
convolution down to ``planes`` channels, 3x3 convolution, 1x1 convolution up to
``4 * planes``, each followed by batch norm, added to the block's input (through
a 1x1 convolution, ``downsample``, where the shape changes) and passed through a
ReLU. ResNet-50 has 3, 4, 6, 3 blocks per stage, ResNet-101 3, 4, 23, 3; stages
2-4 halve the resolution in their first block, so ``layer1`` .. ``layer4`` are
at strides 4, 8, 16, 32 with 256, 512, 1024, 2048 channels. The input is an
image normalised with ImageNet's statistics.

For dense prediction, ``output_stride`` 16 or 8 replaces the stride of
``layer4`` (16), or of ``layer3`` and ``layer4`` (8), by dilation, as the
DeepLab papers (Chen et al. 2017, 2018) do: the stage's 3x3 convolutions are
dilated by 2 (``layer3`` at 8: by 2; ``layer4`` at 8: by 4), so they see the
pixels they saw before, at every position instead of every second. As in
torchvision (``replace_stride_with_dilation``), the first block of a dilated
stage keeps the previous stage's dilation, and there is no multi-grid.

The layout and every parameter name are torchvision's (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0``, ..., ``fc``), so torchvision's
ImageNet files load with a copy loop (:func:`utils.models.load_torchvision`).
``norm_layer`` may be :class:`~utils.models.backbones.frozen_bn.FrozenBatchNorm2d`
for detection. ``width`` multiplies every stage's ``planes`` (and the stem's 64
channels) for the ``ci`` and ``cpu`` profiles.

Deviations from the paper: torchvision's "v1.5" block, with the stride in the
3x3 convolution rather than the first 1x1 (the published weights are v1.5);
the dilated output strides are DeepLab's, not the paper's.
"""

from __future__ import annotations

import torch
from torch import nn

from utils.models.backbones.vgg import scaled

# Blocks per stage.
DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# output_stride -> torchvision's replace_stride_with_dilation for layer2..4
REPLACE_STRIDE_WITH_DILATION = {
    32: (False, False, False),
    16: (False, False, True),
    8: (False, True, True),
}


class Bottleneck(nn.Module):
    """``[B, inplanes, H, W]`` -> ``[B, 4 * planes, H/stride, W/stride]``:
    ``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))``.
    """

    expansion = 4  # the last 1x1 convolution's channels, per ``planes``

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilation: int = 1,
                 norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        # v1.5: the stride sits here, so the 3x3 sees every input pixel
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (B, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (B, planes, H/s, W/s)
        out = self.bn3(self.conv3(out))  # (B, 4 planes, H/s, W/s)
        # the shortcut: the input itself, or projected where the shape changes
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)  # (B, 4 planes, H/s, W/s)


class ResNet(nn.Module):
    """Image ``float32 [B, 3, H, W]`` (ImageNet-normalised) to the four stages'
    outputs, a dict of

    - ``"layer1"``: ``[B, 256w, ceil(H/4), ceil(W/4)]`` (``w`` = width;
      channels rounded, at least 4);
    - ``"layer2"``: ``[B, 512w, H/8, W/8]``;
    - ``"layer3"``: ``[B, 1024w, H/16, W/16]`` (``H/8`` at output stride 8);
    - ``"layer4"``: ``[B, 2048w, H/os, W/os]`` with ``os = output_stride``;
    - ``"fc"`` (when ``classifier``): ``[B, 1000]`` ImageNet logits.

    Each ``H/s`` is what the strided convolutions give: ``floor((H - 1)/s) + 1``
    = ``ceil(H/s)``. ``channels`` and ``strides`` give each stage's channels
    and stride.
    """

    def __init__(self, depth: int = 50, output_stride: int = 32, width: float = 1.0,
                 norm_layer=nn.BatchNorm2d, classifier: bool = False):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"depth must be 50 or 101, got {depth!r}")
        if output_stride not in REPLACE_STRIDE_WITH_DILATION:
            raise ValueError(
                f"output_stride must be 32, 16 or 8, got {output_stride!r}")
        self.depth = depth
        self.output_stride = output_stride
        self.width = width
        self.classifier = classifier
        self._norm_layer = norm_layer
        self.inplanes = scaled(64, width)  # channels entering the next stage
        self.dilation = 1  # dilation reached so far (grows as strides go)
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        dilate = REPLACE_STRIDE_WITH_DILATION[output_stride]
        n1, n2, n3, n4 = DEPTHS[depth]
        self.layer1 = self._make_layer(scaled(64, width), n1)
        self.layer2 = self._make_layer(scaled(128, width), n2, 2, dilate[0])
        self.layer3 = self._make_layer(scaled(256, width), n3, 2, dilate[1])
        self.layer4 = self._make_layer(scaled(512, width), n4, 2, dilate[2])
        self.channels = {f"layer{n}": layer[-1].conv3.out_channels for n, layer in
                         enumerate(self.stages(), start=1)}
        self.strides = {"layer1": 4, "layer2": 8,
                        "layer3": min(16, output_stride),
                        "layer4": output_stride}
        if classifier:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(self.inplanes, 1000)
        self.reset_parameters()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1,
                    dilate: bool = False) -> nn.Sequential:
        """One stage: ``blocks`` bottlenecks, the first with ``stride`` (or,
        when ``dilate``, stride 1 and the following blocks dilated by
        ``stride`` more)."""
        norm_layer = self._norm_layer
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out, 1, stride=stride, bias=False),
                norm_layer(out),
            )
        # The first block still has the stride-2 grid spacing of the stage
        # before it, so it keeps that stage's dilation.
        layers = [Bottleneck(self.inplanes, planes, stride, downsample,
                             previous_dilation, norm_layer)]
        self.inplanes = out
        for _ in range(1, blocks):
            layers.append(Bottleneck(self.inplanes, planes, dilation=self.dilation,
                                     norm_layer=norm_layer))
        return nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        """torchvision's initialisation: He (fan-out) for convolutions, batch
        norms as the identity; the classifier keeps ``nn.Linear``'s default."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stages(self) -> tuple[nn.Sequential, ...]:
        """``(layer1, layer2, layer3, layer4)``."""
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        B, C, H, W = x.shape
        if C != 3:
            raise ValueError(f"ResNet expects 3 input channels, got {list(x.shape)}")
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 64w, H/2, W/2)
        x = self.maxpool(x)  # (B, 64w, H/4, W/4)
        f = {}
        f["layer1"] = self.layer1(x)  # (B, 256w, H/4, W/4)
        f["layer2"] = self.layer2(f["layer1"])  # (B, 512w, H/8, W/8)
        f["layer3"] = self.layer3(f["layer2"])  # (B, 1024w, H/16, W/16) or H/8
        f["layer4"] = self.layer4(f["layer3"])  # (B, 2048w, H/os, W/os)
        if self.classifier:
            pooled = torch.flatten(self.avgpool(f["layer4"]), 1)  # (B, 2048w)
            f["fc"] = self.fc(pooled)  # (B, 1000)
        return f

    def torchvision_keys(self) -> dict[str, str]:
        """torchvision ``resnet50``/``resnet101`` state-dict keys -> this
        model's: the same names (the protocol of :mod:`utils.models.weights`).
        ``num_batches_tracked`` is not a weight; the loader accepts it."""
        return {k: k for k in self.state_dict()
                if not k.endswith("num_batches_tracked")}

    def torchvision_ignored(self) -> tuple[str, ...]:
        """The ImageNet classifier, unless this model has one."""
        return () if self.classifier else ("fc.",)


def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (25.6M parameters with the classifier, 23.5M without)."""
    return ResNet(50, **kwargs)


def resnet101(**kwargs) -> ResNet:
    """ResNet-101 (44.5M parameters with the classifier, 42.5M without)."""
    return ResNet(101, **kwargs)
