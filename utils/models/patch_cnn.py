"""The patch CNN: segmentation by classifying every pixel's window (chapter 02).

Ciresan, Giusti, Gambardella & Schmidhuber, "Deep Neural Networks Segment
Neuronal Membranes in Electron Microscopy Images", NIPS 2012,
https://papers.nips.cc/paper/4741

A small classifier (a conv-pool stack, then fully connected layers) looks at a
``PATCH_SIZE`` x ``PATCH_SIZE`` window and predicts the class of its centre
pixel; sliding it over every pixel segments an image. Its fully connected
layers are convolutions in disguise: fc1 is a 4x4 convolution over the last
pooled map and fc2 a 1x1 convolution, so the same weights score every window of
a whole image in one pass, at a stride of 4 pixels (the two pools), and
shift-and-stitch fills in the pixels in between.

Deviations from the paper: two conv-pool stages on 27x27 windows of colour
images (the paper: four stages on 65x65 or 95x95 grey windows), ReLU instead of
scaled tanh, no foveation or averaging of several networks; ``forward``
interpolates the stride-4 scores bilinearly to full resolution (see
:meth:`PatchCNN.forward`) so that the training loop gets dense scores.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from utils.models.backbones.vgg import scaled

PATCH_SIZE = 27  # side of the window whose centre pixel is classified
STRIDE = 4  # the two 2x2 max-pools: windows the conv form scores are 4 px apart
POOLED_SIZE = 4  # side of the last pooled map of one window: 27 -4+1 /2 -5+1 /2


class PatchCNN(nn.Module):
    """Classifier of ``[N, 3, 27, 27]`` windows, dense on whole images.

    - :meth:`classify`: windows ``float32 [N, 3, 27, 27]`` -> scores ``[N, K]``
      for each window's centre pixel ``(13, 13)``;
    - :meth:`window_scores`: the same network convolutionalised, on a whole
      image ``[B, 3, H, W]``: ``[B, K, h, w]`` with
      ``h = (H - 27) // 4 + 1``; entry ``(i, j)`` is the score of the window
      whose top-left pixel is ``(4 i, 4 j)``;
    - ``forward``: image ``[B, 3, H, W]`` in [0, 1] -> ``[B, K, H, W]``.
    """

    def __init__(self, num_classes: int, width: float = 1.0):
        super().__init__()
        c1, c2, hidden = scaled(32, width), scaled(64, width), scaled(256, width)
        self.features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, c1, 4),  # 27 -> 24
            relu1=nn.ReLU(inplace=True),
            pool1=nn.MaxPool2d(2),  # 24 -> 12
            conv2=nn.Conv2d(c1, c2, 5),  # 12 -> 8
            relu2=nn.ReLU(inplace=True),
            pool2=nn.MaxPool2d(2),  # 8 -> 4
        ))
        self.fc1 = nn.Linear(c2 * POOLED_SIZE * POOLED_SIZE, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def classify(self, patches: torch.Tensor) -> torch.Tensor:
        N, C, P, _ = patches.shape
        if patches.shape[1:] != (3, PATCH_SIZE, PATCH_SIZE):
            raise ValueError(f"expected windows [N, 3, {PATCH_SIZE}, {PATCH_SIZE}], "
                             f"got {list(patches.shape)}")
        x = self.features(patches)  # (N, c2, 4, 4)
        x = F.relu(self.fc1(x.flatten(1)))  # (N, hidden)
        return self.fc2(x)  # (N, K)

    def window_scores(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        x = self.features(x)  # (B, c2, (H-27)//4+4, (W-27)//4+4) for H, W >= 27
        # fc1's weight [hidden, c2*4*4] is a [hidden, c2, 4, 4] kernel: the
        # flattening order of classify() is (channel, row, column).
        fc1 = self.fc1.weight.view(-1, x.shape[1], POOLED_SIZE, POOLED_SIZE)
        x = F.relu(F.conv2d(x, fc1, self.fc1.bias))  # (B, hidden, h, w)
        fc2 = self.fc2.weight[:, :, None, None]
        return F.conv2d(x, fc2, self.fc2.bias)  # (B, K, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dense scores: the window scores of every 4th pixel, interpolated.

        The image is zero-padded so that a window is centred on every pixel
        ``(4 i, 4 j)`` up to and past the last row and column; those scores are
        exactly the sliding window's, and bilinear interpolation
        (``align_corners=True`` keeps them on their pixels) fills in the rest.
        :func:`shift_and_stitch` gives the exact scores of every pixel instead,
        at 16 times the cost.
        """
        B, C, H, W = x.shape
        x = pad_for_windows(x, grid_h=_positions(H), grid_w=_positions(W))
        scores = self.window_scores(x)  # (B, K, ceil((H-1)/4)+1, ceil((W-1)/4)+1)
        h, w = scores.shape[-2:]
        size = (STRIDE * (h - 1) + 1, STRIDE * (w - 1) + 1)
        scores = F.interpolate(scores, size=size, mode="bilinear",
                               align_corners=True)  # (B, K, >=H, >=W)
        return scores[:, :, :H, :W]  # (B, K, H, W)


def _positions(size: int) -> int:
    """Windows ``n`` at stride 4 whose centres ``0, 4, ..., 4 (n - 1)`` reach
    past pixel ``size - 1``."""
    return -(-(size - 1) // STRIDE) + 1


def pad_for_windows(x: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Zero-pad ``x`` by ``PATCH_SIZE // 2`` at the top and left, and at the
    bottom and right as much as ``grid_h`` x ``grid_w`` windows at stride 4
    need, so that window ``(i, j)`` is centred on input pixel ``(4 i, 4 j)``."""
    half = PATCH_SIZE // 2
    H, W = x.shape[-2:]
    bottom = STRIDE * (grid_h - 1) + PATCH_SIZE - half - H
    right = STRIDE * (grid_w - 1) + PATCH_SIZE - half - W
    return F.pad(x, (half, max(right, 0), half, max(bottom, 0)))


def linear_to_conv(linear: nn.Linear, in_channels: int, kernel_size: int
                   ) -> nn.Conv2d:
    """The ``Conv2d`` that applies ``linear`` to every ``kernel_size`` window of
    a map with ``in_channels`` channels (the FC -> conv conversion)."""
    expected = in_channels * kernel_size * kernel_size
    if linear.in_features != expected:
        raise ValueError(
            f"Linear has {linear.in_features} inputs, but {in_channels} channels x "
            f"{kernel_size}x{kernel_size} windows give {expected}"
        )
    conv = nn.Conv2d(in_channels, linear.out_features, kernel_size)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(conv.weight.shape))
        conv.bias.copy_(linear.bias)
    return conv


@torch.no_grad()
def sliding_window(classify, images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Scores ``[B, K, H, W]`` of the window centred on every pixel.

    ``classify`` maps windows ``[N, 3, 27, 27]`` to ``[N, K]``; images are
    zero-padded by 13 and cut into ``H * W`` windows with ``F.unfold``.
    """
    B, C, H, W = images.shape
    half = PATCH_SIZE // 2
    padded = F.pad(images, (half, half, half, half))  # (B, 3, H+26, W+26)
    columns = F.unfold(padded, PATCH_SIZE)  # (B, 3*27*27, H*W)
    patches = columns.transpose(1, 2).reshape(-1, C, PATCH_SIZE, PATCH_SIZE)
    scores = torch.cat([classify(p) for p in patches.split(chunk)])  # (B*H*W, K)
    return scores.view(B, H, W, -1).permute(0, 3, 1, 2)  # (B, K, H, W)


@torch.no_grad()
def shift_and_stitch(window_scores, images: torch.Tensor) -> torch.Tensor:
    """Scores ``[B, K, H, W]`` of every pixel from 16 shifted stride-4 passes.

    ``window_scores`` is a convolutionalised patch network (scores at stride
    4, see :meth:`PatchCNN.window_scores`). Shifting the input up and left by
    ``(dy, dx)`` moves the windows it scores to centres ``(4 i + dy, 4 j + dx)``;
    the 16 shifts together cover every pixel once.
    """
    B, C, H, W = images.shape
    padded = pad_for_windows(images, _positions(H) + 1, _positions(W) + 1)
    out = None
    for dy in range(STRIDE):
        for dx in range(STRIDE):
            scores = window_scores(padded[:, :, dy:, dx:])  # (B, K, >=H/4, >=W/4)
            if out is None:
                out = scores.new_zeros(B, scores.shape[1], H, W)
            rows, cols = out[:, :, dy::STRIDE, dx::STRIDE].shape[-2:]
            out[:, :, dy::STRIDE, dx::STRIDE] = scores[:, :, :rows, :cols]
    return out
