"""Checks for chapter 04 (U-Net): each compares the learner's code with the
canonical copy in :mod:`utils` on fixed inputs."""

from __future__ import annotations

import torch

from utils.checks.common import (
    assert_close,
    exercise,
    fail,
    learner,
    ok,
)
from utils.losses import weight_map
from utils.models import unet


def _skip_and_up():
    g = torch.Generator().manual_seed(4)
    cases = []
    for skip_size, up_size in [((64, 64), (56, 56)), ((17, 20), (9, 11)),
                               ((8, 8), (8, 8))]:
        skip = torch.randn(2, 3, *skip_size, generator=g)
        up = torch.randn(2, 5, *up_size, generator=g)
        cases.append((skip, up))
    return cases


@exercise(forbid=[unet.crop_and_concat, unet.center_crop],
          hints=["the copied map is larger than the upsampled one: take the same "
                 "number of pixels off opposite sides, then stack the two along "
                 "the channels",
                 "the offset along each axis is half the difference of the sizes "
                 "(rounded down); the copied map's channels come first"])
def check_crop_and_concat(crop_and_concat) -> None:
    """``crop_and_concat(skip, up)``: ``skip`` centre-cropped to ``up``'s size,
    then ``[skip, up]`` along the channels."""
    for skip, up in _skip_and_up():
        what = (f"crop_and_concat(skip {list(skip.shape)}, up {list(up.shape)})")
        got = learner(crop_and_concat, skip, up, what=what)
        expected = unet.crop_and_concat(skip, up)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            h, w = up.shape[-2:]
            if torch.equal(got[:, :3], skip[:, :, :h, :w]) and \
                    not torch.equal(got, expected):
                fail(f"{what}: the copied map is cropped at its top-left corner",
                     hint="FCN's crop keeps the top left because its maps are "
                          "aligned there; U-Net's valid convolutions shrink "
                          "every map from all four sides, so the centres align")
            if torch.equal(got, torch.cat([up, expected[:, :3]], 1)):
                fail(f"{what}: the channels are in the wrong order",
                     hint="the copied (cropped) map comes first, then the "
                          "up-convolution's output, as in the paper's Figure 1")
        assert_close(got, expected, what, atol=0, rtol=0)
    ok("crop_and_concat crops at the centre and stacks [skip, up], odd "
       "differences included")


def _instance_maps():
    two = torch.zeros(14, 18, dtype=torch.long)
    two[2:9, 1:7] = 1
    two[3:12, 9:16] = 2
    three = torch.zeros(20, 20, dtype=torch.long)
    three[2:9, 2:9] = 1
    three[2:9, 9:16] = 2  # touching cell 1
    three[11:18, 5:13] = 3
    one = torch.zeros(8, 8, dtype=torch.long)
    one[2:5, 3:6] = 7
    return [("two cells", two), ("three cells, two touching", three),
            ("a single cell", one)]


@exercise(forbid=[weight_map.border_weights, weight_map.instance_distances,
                  weight_map.unet_weight_map],
          hints=["for every cell, the distance of every pixel to that cell's "
                 "nearest pixel; then for every pixel the smallest and the "
                 "second smallest of those distances over the cells",
                 "the term is w0 exp(-(d1 + d2)^2 / (2 sigma^2)), put on "
                 "background pixels only (0 on the cells), and 0 everywhere "
                 "when there are fewer than two cells"])
def check_border_weights(border_weights) -> None:
    """``border_weights(instances, w0, sigma)``: U-Net's border term."""
    for name, inst in _instance_maps():
        for w0, sigma in ((10.0, 5.0), (3.0, 2.0)):
            what = f"border_weights({name}, w0={w0}, sigma={sigma})"
            got = learner(border_weights, inst.clone(), w0, sigma, what=what)
            expected = weight_map.border_weights(inst, w0, sigma)
            if isinstance(got, torch.Tensor) and got.shape == expected.shape:
                _diagnose_border(got, inst, w0, sigma, what)
            assert_close(got, expected, what, atol=1e-4, rtol=1e-4)
    ok("border_weights gives the paper's border term on two and three cells, and "
       "0 for a single cell")


def _diagnose_border(got, inst, w0, sigma, what):
    d1, d2 = weight_map.instance_distances(inst, 2)
    got = got.double()

    def term(d):
        return w0 * torch.exp(-(d.double() ** 2) / (2 * sigma**2))

    everywhere = term(d1 + d2)
    if (inst > 0).any() and torch.allclose(got, everywhere, atol=1e-4) and \
            not torch.allclose(everywhere[inst > 0], torch.zeros(1).double()):
        fail(f"{what}: your weights are also on the cells' own pixels",
             hint="the border term is for the background between cells: set it "
                  "to 0 where instances > 0")
    background = inst == 0
    if torch.isfinite(d2).any() and torch.allclose(
            got[background], term(d1)[background], atol=1e-4):
        fail(f"{what}: your weights use only the nearest cell",
             hint="d2, the distance to the second-nearest cell, makes the term "
                  "large only between two cells")
    if torch.isfinite(d2).any() and torch.allclose(
            got[background], (w0 * torch.exp(-(d1.double() ** 2 + d2.double() ** 2)
                                              / (2 * sigma**2)))[background],
            atol=1e-4):
        fail(f"{what}: your exponent uses d1^2 + d2^2",
             hint="the paper squares the sum of the distances: (d1 + d2)^2")


@exercise(forbid=[unet.overlap_tile_predict],
          hints=["output tile (top, left) needs the input window that starts at "
                 "the same (top, left) of the mirror-padded image and is "
                 "tile + 2 MARGIN pixels wide",
                 "mirror-pad by MARGIN on every side, plus enough at the bottom "
                 "and right that the last tile fits; put each tile's scores at "
                 "(top, left) of the output and crop the output to H x W at the "
                 "end"])
def check_overlap_tile(overlap_tile) -> None:
    """``overlap_tile(net, image, tile, step)``: the overlap-tile prediction."""
    torch.manual_seed(8)
    net = unet.UNet(2, width=1 / 16).eval()
    for size, tile, step in (((70, 50), 36, 32), ((36, 36), 36, 32),
                             ((90, 61), 52, 48)):
        image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(9))
        what = f"overlap_tile on a {size[0]}x{size[1]} image, tile {tile}, step {step}"
        with torch.no_grad():
            got = learner(overlap_tile, net, image, tile, step, what=what)
        expected = unet.overlap_tile_predict(net, image, tile, step)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            zero = _zero_padded_tiles(net, image, tile, step)
            if torch.allclose(got, zero, atol=1e-5) and \
                    not torch.allclose(got, expected, atol=1e-5):
                fail(f"{what}: the border is padded with zeros",
                     hint="the paper mirrors the image at its border "
                          "(utils.models.unet.mirror_pad), so that the border "
                          "cells see a plausible context")
        assert_close(got, expected, what, atol=1e-5, rtol=1e-4)
    ok("overlap_tile stitches the tiles into the canonical prediction")


def _zero_padded_tiles(net, image, tile, step):
    """The overlap-tile prediction with zero padding instead of mirroring."""
    B, C, H, W = image.shape
    m = unet.MARGIN
    rows = unet._tile_starts(H, tile, step)
    cols = unet._tile_starts(W, tile, step)
    padded = torch.nn.functional.pad(image, (m, cols[-1] + tile - W + m,
                                             m, rows[-1] + tile - H + m))
    out = torch.zeros(B, 2, rows[-1] + tile, cols[-1] + tile)
    with torch.no_grad():
        for r in rows:
            for c in cols:
                out[..., r:r + tile, c:c + tile] = net(
                    padded[..., r:r + tile + 2 * m, c:c + tile + 2 * m])
    return out[..., :H, :W]
