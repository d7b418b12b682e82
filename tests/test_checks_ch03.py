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

    def __init__(self, num_classes, width=1.0, pool4_scale=1.0, use_scale=True):
        super().__init__(num_classes, width)
        self.pool4_scale, self.use_scale = pool4_scale, use_scale
        self.score_pool4 = self.score_layer("pool4")
        self.upscore2 = bilinear_upsampling(num_classes, 2)
        self.upscore16 = bilinear_upsampling(num_classes, 16, trainable=False)

    def forward(self, x):
        H, W = x.shape[-2:]
        f = self.features(x)
        s4 = self.score_pool4(f["pool4"] * (self.pool4_scale if self.use_scale
                                            else 1.0))
        fused = s4 + crop_like(self.upscore2(self.score_fr(f["fc7"])), s4)
        return self.upscore16(fused)[..., :H, :W]


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


def test_the_checks_pass_independent_answers(capsys):
    passes(capsys, (ch03.check_bilinear_kernel, kernel_loop),
           (ch03.check_fcn16s, FCN16sOwn),
           (ch03.check_fcn8s, FCN8sOwn))


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
