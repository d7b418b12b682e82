"""Checks for chapter 03 (FCN).

Each compares the learner's code with the course's own implementation in
:mod:`utils.models` on fixed inputs and refuses that implementation as an
answer (see :mod:`utils.checks.common`). The chapter's ``FCN32s`` is given
code, pinned to the canonical one by an ungraded cell
(:func:`utils.checks.common.assert_same_model`).
"""

from __future__ import annotations

import torch

from utils.checks.common import assert_close, exercise, fail, learner, ok
from utils.models import fcn, upsampling


def _tent_kernel(k: int, factor: float, centre: float) -> torch.Tensor:
    tent = 1 - (torch.arange(k, dtype=torch.float32) - centre).abs() / factor
    return tent[:, None] * tent[None, :]


@exercise(
    forbid=[upsampling.bilinear_kernel, upsampling.bilinear_weight,
            upsampling.bilinear_upsampling],
    hints=[
        "build the one-dimensional tent first; the 2-D kernel is the product of "
        "a tent along the rows and a tent along the columns",
        "the factor is k/2 rounded up, and the centre (k - 1)/2 lies on a pixel "
        "for odd k and between two pixels for even k",
    ],
)
def check_bilinear_kernel(bilinear_kernel) -> None:
    """``bilinear_kernel(k)`` is FCN's ``float32 [k, k]`` bilinear kernel."""
    for k in (1, 2, 3, 4, 7, 16):
        what = f"bilinear_kernel({k})"
        got = learner(bilinear_kernel, k, what=what)
        expected = upsampling.bilinear_kernel(k)
        hint = None
        if isinstance(got, torch.Tensor) and got.shape == (k,):
            hint = "this is the one-dimensional tent: the kernel is [k, k]"
        elif isinstance(got, torch.Tensor) and got.shape == (k, k):
            if got.dtype != torch.float32 and torch.allclose(got.float(), expected):
                fail(f"{what}: wrong dtype", torch.float32, got.dtype,
                     hint="a convolution's weight is float32")
            floor = _tent_kernel(k, max(k // 2, 1), (k - 1) / 2)
            if k % 2 and torch.allclose(got.float(), floor):
                hint = "for odd k the factor is k/2 rounded up, not down"
            elif torch.allclose(got.float(), _tent_kernel(k, (k + 1) // 2, k / 2)):
                hint = "the centre is (k - 1)/2: pixel i's centre is at i"
        assert_close(got, expected, what, hint=hint)
    ok("bilinear_kernel is right for k = 1, 2, 3, 4, 7 and 16")


def _check_fcn(cls, reference_cls, name: str, skips: tuple[str, ...]) -> None:
    """The learner's ``cls`` against ``reference_cls``, same weights. The
    scoring layers (zero at initialisation) get random values, and the skips
    scales other than 1, so that every branch and every scale counts."""
    scales = {"pool4_scale": 0.5, "pool3_scale": 0.25}
    kwargs = {key: scales[key] for key in (f"{s}_scale" for s in skips)}
    torch.manual_seed(5)
    ref = reference_cls(4, width=0.0625, **kwargs).eval()
    with torch.no_grad():
        for layer_name in ("score_fr", *(f"score_{s}" for s in skips)):
            layer = getattr(ref, layer_name)
            layer.weight.normal_(0, 0.5)
            layer.bias.normal_(0, 0.5)
    mine = learner(cls, 4, width=0.0625, **kwargs,
                   what=f"{name}(4, width=0.0625, {_kwargs(kwargs)})")
    try:
        mine.load_state_dict(ref.state_dict())
    except (RuntimeError, AttributeError) as err:
        fail(f"{name}: its layers differ from the ones given",
             "the layers of __init__ as given", str(err).splitlines()[0],
             hint="write forward only; keep __init__ as it is")
    mine.eval()
    for size in ((64, 96), (45, 71)):
        x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(6))
        what = f"{name} on a {size[0]}x{size[1]} image"
        with torch.no_grad():
            got = learner(mine, x, what=what)
            expected = ref(x)
        hint = _missing_skip(got, ref, x, skips) if isinstance(
            got, torch.Tensor) and got.shape == expected.shape else None
        assert_close(got, expected, what, hint=hint, atol=1e-4, rtol=1e-4)
    ok(f"{name} gives the canonical model's scores on 64x96 and 45x71 images")


def _kwargs(kwargs: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in kwargs.items())


@torch.no_grad()
def _missing_skip(got, ref, x, skips) -> str | None:
    """A diagnosis when ``got`` is the reference's output without one skip, or
    with a skip's features not scaled."""
    for skip in skips:
        layer = getattr(ref, f"score_{skip}")
        saved = layer.weight.clone(), layer.bias.clone()
        layer.weight.zero_()
        layer.bias.zero_()
        without = ref(x)
        layer.weight.copy_(saved[0])
        layer.bias.copy_(saved[1])
        if torch.allclose(got, without, atol=1e-4, rtol=1e-4):
            return f"the output does not depend on {skip}: its skip is missing"
        scale = getattr(ref, f"{skip}_scale")
        setattr(ref, f"{skip}_scale", 1.0)
        unscaled = ref(x)
        setattr(ref, f"{skip}_scale", scale)
        if torch.allclose(got, unscaled, atol=1e-4, rtol=1e-4):
            return f"{skip}'s features must be multiplied by self.{skip}_scale " \
                   "before they are scored"
    return None


@exercise(
    forbid=[fcn.FCN16s, fcn.FCN8s],
    hints=[
        "start from the coarsest scores (score_fr on fc7), bring them to pool4's "
        "stride, add pool4's own scores, then upsample to the image",
        "an upsampled map is at least as large as the one it joins: crop it to "
        "that one's size first, and crop the final map to H x W; pool4's "
        "features are scaled by self.pool4_scale before they are scored",
    ],
)
def check_fcn16s(cls) -> None:
    """The learner's FCN16s gives the canonical model's scores, same weights."""
    _check_fcn(cls, fcn.FCN16s, "FCN16s", ("pool4",))


@exercise(
    forbid=[fcn.FCN16s, fcn.FCN8s],
    hints=[
        "as FCN-16s up to the sum with pool4's scores; then one more 2x step, "
        "to pool3's stride, where pool3's scores join, and upsample to the image",
        "crop every upsampled map to the map it joins before adding, and the "
        "final one to H x W; each skip's features are scaled "
        "(self.pool4_scale, self.pool3_scale) before they are scored",
    ],
)
def check_fcn8s(cls) -> None:
    """The learner's FCN8s gives the canonical model's scores, same weights."""
    _check_fcn(cls, fcn.FCN8s, "FCN8s", ("pool4", "pool3"))
