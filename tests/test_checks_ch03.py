"""Chapter 03's checks pass independent correct answers (written here, not the
course's copies), refuse the course's own code, and name plausible mistakes."""

import torch
from check_helpers import fails, passes

from utils.checks import ch03
from utils.models import fcn, upsampling
from utils.models.fcn import crop_like
from utils.models.upsampling import bilinear_upsampling


def kernel_loop(k, factor=None, centre=None):
    f = (k + 1) // 2 if factor is None else factor
    c = (k - 1) / 2 if centre is None else centre
    tent = [1 - abs(i - c) / f for i in range(k)]
    return torch.tensor([[a * b for b in tent] for a in tent], dtype=torch.float32)


class FCN16sOwn(fcn.FCN):
    """The chapter's given layers, with a forward written here."""

    def __init__(self, num_classes, width=1.0, pool4_scale=1.0, use_scale=True,
                 crop=True, final_crop=True):
        super().__init__(num_classes, width)
        self.pool4_scale, self.use_scale = pool4_scale, use_scale
        self.crop, self.final_crop = crop, final_crop
        self.score_pool4 = self.score_layer("pool4")
        self.upscore2 = bilinear_upsampling(num_classes, 2)
        self.upscore16 = bilinear_upsampling(num_classes, 16, trainable=False)

    def forward(self, x):
        H, W = x.shape[-2:]
        f = self.features(x)
        s4 = self.score_pool4(f["pool4"] * (self.pool4_scale if self.use_scale
                                            else 1.0))
        up = self.upscore2(self.score_fr(f["fc7"]))
        fused = s4 + (crop_like(up, s4) if self.crop else up)
        out = self.upscore16(fused)
        return out[..., :H, :W] if self.final_crop else out


class FCN8sOwn(fcn.FCN):
    def __init__(self, num_classes, width=1.0, pool4_scale=1.0, pool3_scale=1.0,
                 skip_pool3=False):
        super().__init__(num_classes, width)
        self.pool4_scale, self.pool3_scale = pool4_scale, pool3_scale
        self.skip_pool3 = skip_pool3
        self.score_pool4 = self.score_layer("pool4")
        self.score_pool3 = self.score_layer("pool3")
        self.upscore2 = bilinear_upsampling(num_classes, 2)
        self.upscore_pool4 = bilinear_upsampling(num_classes, 2)
        self.upscore8 = bilinear_upsampling(num_classes, 8, trainable=False)

    def forward(self, x):
        H, W = x.shape[-2:]
        f = self.features(x)
        s4 = self.score_pool4(f["pool4"] * self.pool4_scale)
        fused = s4 + crop_like(self.upscore2(self.score_fr(f["fc7"])), s4)
        up = self.upscore_pool4(fused)
        s3 = self.score_pool3(f["pool3"] * self.pool3_scale)
        fused = crop_like(up, s3) + (0 if self.skip_pool3 else s3)
        return self.upscore8(fused)[..., :H, :W]


def compose_own(*layers, as_conv=False, reverse=False, half_k=False, plus_p=False):
    """Each layer's map as a 2x2 matrix acting on (x, 1); the stack's map is
    their product. The options are four plausible mistakes."""
    total = torch.eye(2, dtype=torch.float64)
    for k, s, p, transposed in layers:
        centre = k / 2 if half_k else (k - 1) / 2
        shift = centre + p if plus_p else centre - p
        m = torch.tensor([[float(s), shift], [0.0, 1.0]], dtype=torch.float64)
        if transposed and not as_conv:
            m = torch.linalg.inv(m)
        total = m @ total if reverse else total @ m
    return total[0, 0].item(), total[0, 1].item()


def test_the_checks_pass_independent_answers(capsys):
    passes(capsys, (ch03.check_bilinear_kernel, kernel_loop),
           (ch03.check_fcn16s, FCN16sOwn),
           (ch03.check_fcn8s, FCN8sOwn),
           (ch03.check_compose, compose_own))


def test_compose_gives_the_paper_s_crop_offsets():
    # The offsets the paper's Caffe definitions crop by: 19 for FCN-32s,
    # 27 for FCN-16s, 31 for FCN-8s (outputs), from an independent compose.
    fc7 = ch03._vgg_fc7(100)
    up = [(4, 2, 0, True)]
    assert compose_own(*fc7, (64, 32, 0, True)) == (1.0, -19.0)
    assert compose_own(*fc7, *up, (32, 16, 0, True)) == (1.0, -27.0)
    assert compose_own(*fc7, *up, *up, (16, 8, 0, True)) == (1.0, -31.0)


def test_the_checks_refuse_the_course_s_own_code():
    fails(ch03.check_bilinear_kernel, upsampling.bilinear_kernel, "bilinear_kernel")
    fails(ch03.check_bilinear_kernel,  # read off the layer the course builds
          lambda k: upsampling.bilinear_upsampling(1, k // 2).weight[0, 0],
          "your code calls")
    fails(ch03.check_fcn16s, fcn.FCN16s, "fcn.FCN16s")
    fails(ch03.check_fcn8s, fcn.FCN8s, "fcn.FCN8s")

    class Borrowed(FCN8sOwn):
        forward = fcn.FCN8s.forward

    fails(ch03.check_fcn8s, Borrowed, "FCN8s.forward")


def test_the_checks_name_plausible_mistakes():
    fails(ch03.check_bilinear_kernel, lambda k: kernel_loop(k, factor=max(k // 2, 1)),
          "rounded up")
    fails(ch03.check_bilinear_kernel, lambda k: kernel_loop(k, centre=k / 2),
          "the centre is (k - 1)/2")
    fails(ch03.check_bilinear_kernel, lambda k: kernel_loop(k).double(),
          "wrong dtype")
    fails(ch03.check_fcn16s,
          lambda *a, **kw: FCN16sOwn(*a, **kw, use_scale=False), "pool4_scale")
    fails(ch03.check_fcn8s, lambda *a, **kw: FCN8sOwn(*a, **kw, skip_pool3=True),
          "does not depend on pool3")


def test_the_instructive_fcn_mistakes_are_diagnosed():
    # No crop before the sum: 4x6 + 3x5 on the 45x71 image.
    fails(ch03.check_fcn16s, lambda *a, **kw: FCN16sOwn(*a, **kw, crop=False),
          "45x71", "raised RuntimeError", "crop it")
    fails(ch03.check_fcn16s, lambda *a, **kw: FCN16sOwn(*a, **kw, final_crop=False),
          "48x80, larger than the 45x71 image")
    # The scales the check uses are not 1, so forgetting them shows.
    fails(ch03.check_fcn16s,
          lambda *a, **kw: FCN16sOwn(*a, **kw, use_scale=False), "self.pool4_scale")


def test_the_instructive_compose_mistakes_are_diagnosed():
    fails(ch03.check_compose, lambda *ls: compose_own(*ls, as_conv=True),
          "transposed convolution is the inverse")
    fails(ch03.check_compose, lambda *ls: compose_own(*ls, reverse=True),
          "wrong way round")
    fails(ch03.check_compose, lambda *ls: compose_own(*ls, half_k=True),
          "(k - 1)/2")
    fails(ch03.check_compose, lambda *ls: compose_own(*ls, plus_p=True),
          "subtracted")
    fails(ch03.check_compose, ch03.coordinate_map, "coordinate_map")
