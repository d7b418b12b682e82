"""Chapter 00's checks pass independent correct answers (written here, not the
course's copies), refuse the course's own code, and name plausible mistakes."""

import numpy as np
import torch
import torch.nn.functional as F
from check_helpers import fails, passes
from torch import nn

from utils.checks import ch00
from utils.data import formats, targets
from utils.models import tiny_fcn


def colorize_loop(label, palette):
    out = np.zeros((*label.shape, 3), np.uint8)
    for (y, x), k in np.ndenumerate(label):
        out[y, x] = palette[k]
    return out


TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
         23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def to_train_ids_loop(label_ids):
    out = np.full(label_ids.shape, 255, np.int64)
    for index, value in np.ndenumerate(label_ids):
        out[index] = TRAIN.get(int(value), 255)
    return out


def rle_decode_loop(counts, height, width):
    column_major, value = [], 0
    for count in counts:
        column_major += [value] * count
        value = 1 - value
    mask = np.zeros((height, width), np.uint8)
    for i, v in enumerate(column_major):
        mask[i % height, i // height] = v
    return mask


def boxes_loop(masks, last_pixel=False, swap=False):
    """Boxes by scanning each mask's rows and columns."""
    out = torch.zeros(len(masks), 4)
    for n, mask in enumerate(masks):
        rows = [y for y in range(mask.shape[0]) if mask[y].any()]
        cols = [x for x in range(mask.shape[1]) if mask[:, x].any()]
        if rows:
            end = 0 if last_pixel else 1
            box = [cols[0], rows[0], cols[-1] + end, rows[-1] + end]
            out[n] = torch.tensor(box[1::-1] + box[:1:-1] if swap else box)
    return out


class TinyFCNOwn(nn.Module):
    """The chapter's given layers, with a forward written here."""

    def __init__(self, num_classes, width=1.0, corners=False, upsample=True):
        super().__init__()
        c = max(8, round(32 * width))
        block = tiny_fcn.conv_block
        self.encoder = nn.Sequential(block(3, c), block(c, 2 * c, stride=2),
                                     block(2 * c, 2 * c),
                                     block(2 * c, 4 * c, stride=2),
                                     block(4 * c, 4 * c, dilation=2))
        self.classifier = nn.Conv2d(4 * c, num_classes, kernel_size=1)
        self.corners, self.upsample = corners, upsample

    def forward(self, x):
        scores = self.classifier(self.encoder(x))
        if not self.upsample:
            return scores
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear",
                             align_corners=self.corners)


def test_the_checks_pass_independent_answers(capsys):
    passes(capsys, (ch00.check_colorize, colorize_loop),
           (ch00.check_to_train_ids, to_train_ids_loop),
           (ch00.check_rle_decode, rle_decode_loop),
           (ch00.check_boxes_from_masks, boxes_loop),
           (ch00.check_tiny_fcn, TinyFCNOwn))


def test_the_checks_refuse_the_course_s_own_code():
    fails(ch00.check_colorize, formats.colorize, "formats.colorize")
    fails(ch00.check_to_train_ids,
          lambda x: formats.cityscapes_lut()[x].astype(np.int64), "cityscapes_lut")
    fails(ch00.check_rle_decode, lambda c, h, w: formats.rle_decode(c, h, w),
          "formats.rle_decode")
    fails(ch00.check_tiny_fcn, tiny_fcn.TinyFCN, "tiny_fcn.TinyFCN")
    fails(ch00.check_boxes_from_masks, targets.boxes_from_masks, "boxes_from_masks")


def test_the_checks_name_plausible_mistakes():
    fails(ch00.check_colorize, lambda lab, p: colorize_loop(lab, p).transpose(2, 0, 1),
          "wrong shape", "last axis")
    fails(ch00.check_colorize, lambda lab, p: colorize_loop(lab, p) / 255.0,
          "wrong dtype", "bytes")
    fails(ch00.check_to_train_ids, lambda x: to_train_ids_loop(x).astype(np.uint8),
          "wrong dtype", "int64")
    fails(ch00.check_to_train_ids,
          lambda x: np.where(to_train_ids_loop(x) < 255, to_train_ids_loop(x) + 1,
                             255), "values differ")
    fails(ch00.check_rle_decode,  # the runs read along the rows
          lambda c, h, w: np.repeat(np.arange(len(c)) % 2, c).reshape(h, w),
          "row by row")
    fails(ch00.check_tiny_fcn,
          lambda k, width: TinyFCNOwn(k, width, upsample=False), "coarse scores")
    fails(ch00.check_boxes_from_masks,  # torchvision's masks_to_boxes convention
          lambda m: boxes_loop(m, last_pixel=True), "masks_to_boxes", "one past")
    fails(ch00.check_boxes_from_masks, lambda m: boxes_loop(m, swap=True),
          "x and y are swapped")
    fails(ch00.check_boxes_from_masks, lambda m: boxes_loop(m).long(),
          "wrong dtype", "float32")
    # A uint8 table gives uint8 trainIds with the right values: refused.
    uint8_table = np.array([TRAIN.get(k, 255) for k in range(256)], np.uint8)
    fails(ch00.check_to_train_ids, lambda x: uint8_table[x], "wrong dtype", "int64")
    fails(ch00.check_tiny_fcn, lambda k, width: TinyFCNOwn(k, width, corners=True),
          "align_corners=True")


def test_the_stub_is_not_done_yet_and_spends_no_hint():
    def stub(*args):
        raise NotImplementedError()
    text = fails(ch00.check_colorize, stub, "not done yet")
    # The exercise's text has the first hint: none of the tiers is shown, only
    # what to do.
    assert "cell above" in text
    assert not any(tier in text for tier in ch00.check_colorize.hints)
