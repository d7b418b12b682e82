"""U-Net: a contracting and an expanding path joined by crop-and-concat (chapter 04).

Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical
Image Segmentation", MICCAI 2015, https://arxiv.org/abs/1505.04597

The contracting path is four steps of two unpadded 3x3 convolutions (each
followed by a ReLU) and a 2x2 max-pool; the channels double at each step
(64, 128, 256, 512, and 1024 at the bottom). The expanding path undoes the
pooling with 2x2 up-convolutions (transposed convolutions of stride 2) that
halve the channels, *concatenates* the feature map of the same step of the
contracting path, centre-cropped because every unpadded convolution took two
pixels off each side, and applies two 3x3 convolutions again. A 1x1
convolution scores the classes: 23 convolutional layers in all.

With unpadded ("valid") convolutions no output pixel depends on padding:
each is computed from real input pixels only (a window of 188 or 204 pixels
that starts on the 16-pixel grid of the poolings). The paper's 572x572 tile
gives a 388x388 map, ``H_out = H - 184``, and only ``H = 16 k + 60 >= 188``
is legal (:func:`legal_sizes`). Images larger than a tile are predicted tile by tile
from a mirror-padded copy (:func:`overlap_tile_predict`, the paper's
overlap-tile strategy), which gives exactly the prediction of one pass over
the whole mirror-padded image when the tiles start on the 16-pixel grid of the
four poolings.

``padding="same"`` pads every 3x3 convolution by one pixel, pools with
``ceil_mode`` and trims each up-convolution to its skip's size: any input size
then gives a map of the input's size, which is what the command line's
``python -m utils.train --model unet`` and the Shapes comparison use.

Takes images in [0, 1] as they are (no normalisation inside: there are no
pretrained weights whose statistics it would have to match).

Deviations from the paper: none in ``padding="valid"`` (weights start as the
paper's Gaussian with standard deviation sqrt(2 / fan-in), biases at 0; the
paper's drop-out at the end of the contracting path is left out, as in its
Figure 1); ``padding="same"`` is the course's addition.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from utils.models.backbones.vgg import scaled

# Channels of the four steps of the contracting path and of the bottom at width 1.
CHANNELS = (64, 128, 256, 512, 1024)
DEPTH = 4  # poolings: the map shrinks by 2 ** DEPTH = 16 on its way down
# Pixels the valid network takes off each side of its input: 2 per 3x3
# convolution, scaled by the resolution it works at (2*1 + 2*2 + 2*4 + 2*8 on
# the way down, 2*16 at the bottom, 2*8 + 2*4 + 2*2 + 2*1 on the way up).
MARGIN = 92


def output_size(size: int, padding: str = "valid") -> int:
    """Side of the score map for an input side ``size`` (valid: ``size - 184``;
    same: ``size``). Raises ``ValueError`` for a size the valid network cannot
    take: one where a map before a pooling is odd, or the map vanishes."""
    if padding == "same":
        return size
    s = size
    for _ in range(DEPTH):
        s -= 4  # two unpadded 3x3 convolutions
        if s < 2 or s % 2:
            raise ValueError(_illegal(size))
        s //= 2
    s -= 4  # the bottom's two convolutions
    for _ in range(DEPTH):
        s = 2 * s - 4  # up-convolution, then two convolutions
    if s < 1:
        raise ValueError(_illegal(size))
    return s


def legal_sizes(upto: int) -> list[int]:
    """Every input side at most ``upto`` that the valid U-Net accepts:
    ``16 k + 60`` for ``k >= 8`` (188, 204, ..., 572, ...)."""
    return [s for s in range(188, upto + 1, 16)]


def _illegal(size: int) -> str:
    below = max([s for s in legal_sizes(size)], default=None)
    above = below + 16 if below is not None else 188
    options = f"{above}" if below is None else f"{below} or {above}"
    return (f"U-Net with valid convolutions cannot take a side of {size} pixels: "
            f"it needs 16 k + 60 >= 188 (every map before a pooling even); "
            f"the nearest legal sides are {options}")


def center_crop(x: torch.Tensor, size) -> torch.Tensor:
    """The central ``size = (h, w)`` window of ``x [..., H, W]`` (an odd
    difference leaves the extra row or column at the bottom or right)."""
    h, w = size
    H, W = x.shape[-2:]
    if H < h or W < w:
        raise ValueError(f"cannot crop {H}x{W} to {h}x{w}: too small")
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top : top + h, left : left + w]


def crop_and_concat(skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """U-Net's skip: ``skip [B, C1, H1, W1]`` centre-cropped to ``up [B, C2, H,
    W]``'s size, then both stacked along the channels: ``[B, C1 + C2, H, W]``
    (the copied map first, as in the paper's Figure 1)."""
    return torch.cat([center_crop(skip, up.shape[-2:]), up], dim=1)


def double_conv(cin: int, cout: int, padding: int) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by a ReLU."""
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(cin, cout, 3, padding=padding),
        relu1=nn.ReLU(inplace=True),
        conv2=nn.Conv2d(cout, cout, 3, padding=padding),
        relu2=nn.ReLU(inplace=True),
    ))


class UNet(nn.Module):
    """Image ``float32 [B, in_channels, H, W]`` in [0, 1] to class scores.

    ``padding="valid"`` (the paper): scores ``[B, num_classes, H - 184, W -
    184]`` for ``H, W`` in :func:`legal_sizes`; pixel ``(i, j)`` of the output
    is the prediction for input pixel ``(i + 92, j + 92)``.
    ``padding="same"``: scores ``[B, num_classes, H, W]`` for any ``H, W``.
    ``width`` multiplies every channel count (1.0 = the paper's 64..1024).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0,
                 padding: str = "valid"):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        self.num_classes, self.in_channels, self.padding = num_classes, in_channels, \
            padding
        c1, c2, c3, c4, c5 = (scaled(c, width) for c in CHANNELS)
        p = 0 if padding == "valid" else 1
        # "same" pools round up, so that no row is dropped; each up-convolution
        # is then trimmed to its skip's size (both start at the top left).
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=padding == "same")
        self.down1 = double_conv(in_channels, c1, p)
        self.down2 = double_conv(c1, c2, p)
        self.down3 = double_conv(c2, c3, p)
        self.down4 = double_conv(c3, c4, p)
        self.bottom = double_conv(c4, c5, p)
        self.upconv4 = nn.ConvTranspose2d(c5, c4, 2, stride=2)
        self.up4 = double_conv(2 * c4, c4, p)
        self.upconv3 = nn.ConvTranspose2d(c4, c3, 2, stride=2)
        self.up3 = double_conv(2 * c3, c3, p)
        self.upconv2 = nn.ConvTranspose2d(c3, c2, 2, stride=2)
        self.up2 = double_conv(2 * c2, c2, p)
        self.upconv1 = nn.ConvTranspose2d(c2, c1, 2, stride=2)
        self.up1 = double_conv(2 * c1, c1, p)
        self.classifier = nn.Conv2d(c1, num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation: Gaussian with standard deviation
        sqrt(2 / N), N the incoming nodes of one neuron (for a 3x3 convolution
        of 64 channels, 9 * 64), so every feature map keeps unit variance."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.ConvTranspose2d):
                # an input pixel feeds 2x2 outputs once each: fan-in = C_in
                nn.init.normal_(m.weight, 0.0, (2.0 / m.in_channels) ** 0.5)
                nn.init.zeros_(m.bias)

    def expand(self, x: torch.Tensor, skip: torch.Tensor, upconv, block):
        """One step of the expanding path: up-convolve, join the skip, convolve."""
        up = upconv(x)
        if self.padding == "same":  # ceil-mode pools: up may be one row longer
            up = up[..., : skip.shape[-2], : skip.shape[-1]]
        return block(crop_and_concat(skip, up))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images [B, {self.in_channels}, H, W], got "
                             f"{list(x.shape)}")
        B, C, H, W = x.shape
        for side in (H, W):  # raises for an illegal size
            output_size(side, self.padding)
        # Margins: the paper's 572x572 tile with padding="valid".
        x1 = self.down1(x)  # (B, 64w, 568, 568)
        x2 = self.down2(self.pool(x1))  # (B, 128w, 280, 280)
        x3 = self.down3(self.pool(x2))  # (B, 256w, 136, 136)
        x4 = self.down4(self.pool(x3))  # (B, 512w, 64, 64)
        x = self.bottom(self.pool(x4))  # (B, 1024w, 28, 28)
        x = self.expand(x, x4, self.upconv4, self.up4)  # (B, 512w, 52, 52)
        x = self.expand(x, x3, self.upconv3, self.up3)  # (B, 256w, 100, 100)
        x = self.expand(x, x2, self.upconv2, self.up2)  # (B, 128w, 196, 196)
        x = self.expand(x, x1, self.upconv1, self.up1)  # (B, 64w, 388, 388)
        return self.classifier(x)  # (B, K, 388, 388)


def mirror_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int
               ) -> torch.Tensor:
    """``x [..., H, W]`` extended by mirroring at its borders (the edge pixel is
    not repeated, as ``F.pad(mode="reflect")``), by any amount: a pad wider
    than the image mirrors the mirror image again."""
    H, W = x.shape[-2:]
    if min(top, bottom, left, right) < 0:
        raise ValueError("pads must be >= 0")
    if (top or bottom) and H < 2 or (left or right) and W < 2:
        raise ValueError(f"cannot mirror a map of {H}x{W} pixels")
    rows = _mirror_index(torch.arange(-top, H + bottom, device=x.device), H)
    cols = _mirror_index(torch.arange(-left, W + right, device=x.device), W)
    return x[..., rows[:, None], cols[None, :]]


def _mirror_index(i: torch.Tensor, n: int) -> torch.Tensor:
    """Positions ``i`` (any integers) folded into ``[0, n)`` by reflection:
    the pattern 0, 1, ..., n-1, n-2, ..., 1 repeats with period 2 (n - 1)."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i >= n, period - i, i)


@torch.no_grad()
def overlap_tile_predict(model: UNet, image: torch.Tensor, tile: int,
                         step: int | None = None) -> torch.Tensor:
    """Scores ``[B, K, H, W]`` for images ``[B, C, H, W]`` of any size, from
    a valid U-Net applied tile by tile (the paper's overlap-tile strategy).

    The image is mirror-padded by :data:`MARGIN` on every side (and at the
    bottom and right up to a whole number of steps); output tiles of
    ``tile x tile`` pixels (``tile + 184`` a legal input side) start every
    ``step`` pixels (default: ``tile`` rounded down to a multiple of 16) and
    later tiles overwrite the overlap. ``step`` must be a multiple of 16, the
    period of the four poolings: then every tile sees the pooling grid of one
    pass over the whole padded image, and the result equals that pass.
    """
    B, C, H, W = image.shape
    output_size(tile + 2 * MARGIN)  # raises for an illegal tile
    step = step if step is not None else tile - tile % 16
    if step < 1 or step % 16 or step > tile:
        raise ValueError(f"step must be a multiple of 16 in [16, tile={tile}], "
                         f"got {step}")
    rows = _tile_starts(H, tile, step)
    cols = _tile_starts(W, tile, step)
    padded = mirror_pad(image, MARGIN, rows[-1] + tile - H + MARGIN,
                        MARGIN, cols[-1] + tile - W + MARGIN)
    out = None
    for top in rows:
        for left in cols:
            window = padded[..., top : top + tile + 2 * MARGIN,
                            left : left + tile + 2 * MARGIN]
            scores = model(window)  # (B, K, tile, tile)
            if out is None:
                out = scores.new_zeros(B, scores.shape[1], rows[-1] + tile,
                                       cols[-1] + tile)
            out[..., top : top + tile, left : left + tile] = scores
    return out[..., :H, :W]


def _tile_starts(size: int, tile: int, step: int) -> list[int]:
    """0, step, 2 step, ... until a tile from there covers ``size``."""
    starts = [0]
    while starts[-1] + tile < size:
        starts.append(starts[-1] + step)
    return starts


class MirrorPadded(nn.Module):
    """A valid U-Net that first mirror-pads its input by :data:`MARGIN` on
    every side: scores ``[B, K, H, W]`` for images ``[B, C, H, W]`` whose
    ``H + 184`` and ``W + 184`` are legal (``H = 16 k + 4``: 52, 68, 84, ...).

    This is one tile of the overlap-tile strategy, the whole image in one go:
    how the chapter trains the valid U-Net on 68x68 Cells images with targets
    of their own size, so that the course's ``fit`` and metrics apply as they
    are.
    """

    def __init__(self, unet: nn.Module):
        super().__init__()
        if getattr(unet, "padding", "valid") != "valid":
            raise ValueError("MirrorPadded is for a U-Net with padding='valid'")
        self.unet = unet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        x = mirror_pad(x, MARGIN, MARGIN, MARGIN, MARGIN)  # (B, C, H + 184, W + 184)
        return self.unet(x)  # (B, K, H, W)
