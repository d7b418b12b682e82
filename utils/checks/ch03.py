"""Checks for chapter 03 (FCN): each compares the learner's code with the
canonical copy in :mod:`utils.models` on fixed inputs."""

from __future__ import annotations

import torch

from utils.checks.common import assert_close, call, ok
from utils.models import fcn, upsampling


def check_bilinear_kernel(bilinear_kernel) -> None:
    """``bilinear_kernel(k)`` is FCN's ``[k, k]`` bilinear upsampling kernel."""
    hint = ("factor f = (k + 1) // 2, centre c = (k - 1) / 2, tent "
            "1 - |i - c| / f, outer product of two tents")
    for k in (1, 2, 3, 4, 7, 16):
        what = f"bilinear_kernel({k})"
        got = call(bilinear_kernel, k, what=what, hint=hint)
        assert_close(got, upsampling.bilinear_kernel(k), what, hint)
    ok("bilinear_kernel matches the reference for k = 1, 2, 3, 4, 7, 16")


def _check_fcn(cls, reference_cls, name: str, hint: str) -> None:
    torch.manual_seed(5)
    ref = reference_cls(4, width=0.0625).eval()
    with torch.no_grad():  # non-zero scoring layers, so every branch counts
        for layer_name in ("score_fr", "score_pool4", "score_pool3"):
            layer = getattr(ref, layer_name, None)
            if layer is not None:
                layer.weight.normal_(0, 0.5)
                layer.bias.normal_(0, 0.5)
    mine = cls(4, width=0.0625).eval()
    try:
        mine.load_state_dict(ref.state_dict())
    except RuntimeError as err:
        raise AssertionError(f"{name}'s layers differ from utils.models.{name}'s: "
                             f"{err}") from None
    for size in ((64, 96), (45, 71)):
        x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(6))
        what = f"{name} on a {size[0]}x{size[1]} image"
        with torch.no_grad():
            got = call(mine, x, what=what, hint=hint)
            assert_close(got, ref(x), what, hint, atol=1e-4, rtol=1e-4)
    ok(f"{name} gives utils.models.{name}'s scores on 64x96 and 45x71 images")


def check_fcn16s(cls) -> None:
    _check_fcn(cls, fcn.FCN16s, "FCN16s",
               "upscore2(score_fr), crop it to score_pool4's size, add, "
               "upscore16, crop to H x W")


def check_fcn8s(cls) -> None:
    _check_fcn(cls, fcn.FCN8s, "FCN8s",
               "as FCN-16s, then upscore_pool4(fuse_pool4), crop to score_pool3, "
               "add, upscore8, crop to H x W")


def check_fcn32s(cls) -> None:
    _check_fcn(cls, fcn.FCN32s, "FCN32s", "upscore(score_fr), crop to H x W")
