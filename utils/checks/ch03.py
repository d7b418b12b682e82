"""Checks for chapter 03 (FCN).

Each compares the learner's code with the course's own implementation in
:mod:`utils.models` on fixed inputs and refuses that implementation as an
answer (see :mod:`utils.checks.common`). The chapter's ``FCN32s`` is given
code, pinned to the canonical one by an ungraded cell
(:func:`utils.checks.common.assert_same_model`).
"""

from __future__ import annotations

import torch

from utils.checks.common import (
    assert_close,
    exercise,
    fail,
    learner,
    mismatched_sizes,
    ok,
)
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
            got = learner(mine, x, what=what, diagnose=_crop_diagnosis)
            expected = ref(x)
        hint = None
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            hint = _missing_skip(got, ref, x, skips)
        elif isinstance(got, torch.Tensor) and got.ndim == 4 and \
                got.shape[:2] == expected.shape[:2] and \
                got.shape[-2] >= size[0] and got.shape[-1] >= size[1]:
            hint = f"the output is {got.shape[-2]}x{got.shape[-1]}, larger than " \
                   f"the {size[0]}x{size[1]} image: the last upsampling " \
                   "overshoots too; keep the image's first H rows and W columns"
        assert_close(got, expected, what, hint=hint, atol=1e-4, rtol=1e-4)
    ok(f"{name} gives the canonical model's scores on 64x96 and 45x71 images")


def _crop_diagnosis(err) -> str | None:
    sizes = mismatched_sizes(err)
    if sizes is None:
        return None
    a, b, dim = sizes
    return (f"two score maps of different sizes were added ({a} and {b} along "
            f"dimension {dim}): the pools round up, so an upsampled map can be a "
            "row or column larger than the map it joins; crop it to that map's "
            "size (crop_like) before adding")


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


def coordinate_map(*layers, transposed_as_conv=False, reverse=False, centre=None,
                   padding_sign=-1) -> tuple[float, float]:
    """``(scale, offset)`` with input position = scale * output position +
    offset through ``layers`` = ``(kernel, stride, padding, transposed)`` from
    the input to the output (the check's reference). The keyword arguments
    give the usual mistakes: a transposed layer mapped like a convolution,
    the maps composed the wrong way round, another centre (a function of k),
    the padding added."""
    scale, offset = 1.0, 0.0
    for k, s, p, transposed in layers:
        middle = (k - 1) / 2 if centre is None else centre(k)
        if transposed and not transposed_as_conv:  # the inverse of the conv map
            a, c = 1 / s, (-padding_sign * p - middle) / s
        else:
            a, c = s, middle + padding_sign * p
        if reverse:
            scale, offset = scale * a, a * offset + c
        else:
            scale, offset = scale * a, scale * c + offset
    return scale, offset


def _vgg_fc7(first_pad: int) -> list:
    """The paper's VGG16 up to fc7, as (kernel, stride, padding, transposed)."""
    layers = [(3, 1, first_pad, False), (3, 1, 1, False), (2, 2, 0, False)]
    for depth in (2, 3, 3, 3):
        layers += [(3, 1, 1, False)] * depth + [(2, 2, 0, False)]
    return layers + [(7, 1, 0, False), (1, 1, 0, False)]


def _layer_stacks():
    """Named stacks of layers: single layers, the paper's FCN-32s, and random
    stacks of convolutions, pools and transposed convolutions."""
    cases = {
        "a 3x3 convolution, padding 1": [(3, 1, 1, False)],
        "a 2x2 max-pool, stride 2": [(2, 2, 0, False)],
        "conv1_1 padded by 100": [(3, 1, 100, False)],
        "a transposed convolution k=4, s=2, p=1": [(4, 2, 1, True)],
        "the paper's FCN-32s (VGG16 to fc7, then k=64, s=32)":
            _vgg_fc7(100) + [(64, 32, 0, True)],
    }
    g = torch.Generator().manual_seed(11)
    for n in range(3):
        stack = []
        for _ in range(int(torch.randint(3, 7, (), generator=g))):
            k, s, p = (int(v) for v in torch.randint(1, 6, (3,), generator=g))
            stack.append((k, min(s, 3), p - 1, bool(torch.rand((), generator=g)
                                                    < 0.3)))
        cases[f"random stack {n + 1}"] = stack
    return cases


@exercise(
    forbid=[coordinate_map],
    hints=[
        "each layer maps an output position to an input position by a straight "
        "line (a scale and an offset); a chain of layers maps by the composition "
        "of those lines",
        "a convolution or pool puts output x at the centre of its window, "
        "stride * x + (k - 1)/2 - padding; a transposed convolution is that "
        "map read backwards, so solve it for the other side",
        "walk the layers from the input to the output, keeping the map from the "
        "current layer's output to the image: substituting the next layer's map "
        "into it multiplies the scales and moves the offset by the old scale "
        "times the new offset",
    ],
)
def check_compose(compose) -> None:
    """``compose(*layers)`` -> ``(scale, offset)`` of the composed coordinate
    map, for layers ``(kernel, stride, padding, transposed)``."""
    mistakes = {
        "a transposed convolution is the inverse of a convolution's map, not "
        "the same map": dict(transposed_as_conv=True),
        "the maps are composed the wrong way round: the offset of a later layer "
        "is scaled by the strides of the layers before it":
            dict(reverse=True),
        "the centre of a window of k pixels is (k - 1)/2, not k/2 (pixel i's "
        "centre is at i)": dict(centre=lambda k: k / 2),
        "padding moves the window up and left: it is subtracted":
            dict(padding_sign=1),
    }
    for name, layers in _layer_stacks().items():
        what = f"compose of {name}"
        got = learner(compose, *layers, what=what)
        expected = coordinate_map(*layers)
        try:
            got = tuple(float(v) for v in got)
        except (TypeError, ValueError, RuntimeError):
            fail(f"{what}: wrong result", "a pair (scale, offset)", type(got).__name__)
        if len(got) != 2:
            fail(f"{what}: wrong result", "a pair (scale, offset)", got)
        if all(abs(a - b) <= 1e-9 * max(1.0, abs(b)) for a, b in zip(got, expected)):
            continue
        hint = None
        for diagnosis, kwargs in mistakes.items():
            alt = coordinate_map(*layers, **kwargs)
            if alt != expected and all(abs(a - b) <= 1e-9 * max(1.0, abs(b))
                                       for a, b in zip(got, alt)):
                hint = diagnosis
                break
        fail(f"{what}: (scale, offset)", expected, got, hint=hint)
    ok("compose gives the coordinate map of single layers, of FCN-32s and of "
       "random stacks")
