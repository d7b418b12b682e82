"""The check functions under chapters 02 and 03's exercises pass the canonical
code and fail a wrong one with an AssertionError (not another exception)."""

import pytest
import torch
import torch.nn.functional as F

from utils.checks import ch02, ch03
from utils.models import FCN8s, FCN16s, FCN32s, PatchCNN, patch_cnn, upsampling


def test_ch02_checks_pass_the_canonical_code(capsys):
    ch02.check_patch_cnn(PatchCNN)
    ch02.check_sliding_window(patch_cnn.sliding_window)
    ch02.check_fc_to_conv(patch_cnn.linear_to_conv)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("✓ ") for line in lines)


def test_ch02_checks_fail_wrong_code():
    def shifted(classify, images):  # windows off by one pixel
        return patch_cnn.sliding_window(classify, F.pad(images, (1, 0))[..., :-1])

    with pytest.raises(AssertionError, match="sliding_window"):
        ch02.check_sliding_window(shifted)

    def transposed(linear, c, k):  # wrong flattening order
        conv = patch_cnn.linear_to_conv(linear, c, k)
        with torch.no_grad():
            conv.weight.copy_(conv.weight.transpose(2, 3).clone())
        return conv

    with pytest.raises(AssertionError, match="fc_to_conv"):
        ch02.check_fc_to_conv(transposed)

    def not_done(*args):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="not done"):
        ch02.check_fc_to_conv(not_done)


def test_ch03_checks_pass_the_canonical_code(capsys):
    ch03.check_bilinear_kernel(upsampling.bilinear_kernel)
    ch03.check_fcn32s(FCN32s)
    ch03.check_fcn16s(FCN16s)
    ch03.check_fcn8s(FCN8s)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("✓ ") for line in lines)


def test_ch03_checks_fail_wrong_code():
    with pytest.raises(AssertionError, match="bilinear_kernel"):
        ch03.check_bilinear_kernel(lambda k: torch.ones(k, k) / k)

    class NoSkip(FCN8s):  # forgets score_pool3
        def forward(self, x):
            H, W = x.shape[-2:]
            f = self.features(x)
            s = self.upscore2(self.score_fr(f["fc7"]))
            s4 = self.score_pool4(f["pool4"])
            s = self.upscore_pool4(s[..., :s4.shape[-2], :s4.shape[-1]] + s4)
            return self.upscore8(s)[..., :H, :W]

    with pytest.raises(AssertionError, match="FCN8s"):
        ch03.check_fcn8s(NoSkip)
