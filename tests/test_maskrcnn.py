"""The canonical Mask R-CNN (utils/models/detection): torchvision's settings and
parameter names, its train and eval contracts, and its pieces against
references written here (formulas, hand-made cases, functional layers over a
state dict in torchvision's format).

The whole network is compared with torchvision itself outside the suite:
``benchmarks/reference/compare_maskrcnn.py``.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision_format import resnet_state_dict

from utils.models import MODELS, build_model, load_torchvision
from utils.models.backbones.frozen_bn import FrozenBatchNorm2d
from utils.models.detection.box_head import fastrcnn_loss
from utils.models.detection.mask_head import maskrcnn_inference, maskrcnn_loss
from utils.models.detection.mask_rcnn import (
    MaskRCNN,
    MaskRCNNConfig,
    maskrcnn_resnet50_fpn_coco,
    published_names,
)
from utils.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

LOSSES = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
          "loss_rpn_box_reg")


def small_model(num_classes=4, size=64, **fields):
    torch.manual_seed(0)
    return MaskRCNN.for_profile("ci", size, num_classes, width=0.125, **fields)


def target(boxes, labels, size):
    """Boxes (x1, y1, x2, y2 on whole pixels), their labels and filled masks."""
    h, w = size
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes):
        m[y1:y2, x1:x2] = 1
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64), "masks": masks}


# --- torchvision's configuration ------------------------------------------------

def test_defaults_are_torchvisions_maskrcnn_resnet50_fpn():
    """The defaults, typed from torchvision 0.29's ``MaskRCNN``/``FasterRCNN``
    signatures and ``maskrcnn_resnet50_fpn``, and the modules built from them."""
    c = MaskRCNNConfig()
    expected = dict(
        num_classes=91, min_size=800, max_size=1333,
        image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225),
        size_divisible=32,
        anchor_sizes=((32,), (64,), (128,), (256,), (512,)),
        aspect_ratios=((0.5, 1.0, 2.0),) * 5,
        rpn_pre_nms_top_n_train=2000, rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_train=2000, rpn_post_nms_top_n_test=1000,
        rpn_nms_thresh=0.7, rpn_fg_iou_thresh=0.7, rpn_bg_iou_thresh=0.3,
        rpn_batch_size_per_image=256, rpn_positive_fraction=0.5, rpn_score_thresh=0.0,
        box_score_thresh=0.05, box_nms_thresh=0.5, box_detections_per_img=100,
        box_fg_iou_thresh=0.5, box_bg_iou_thresh=0.5, box_batch_size_per_image=512,
        box_positive_fraction=0.25, bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        box_roi_output_size=7, mask_roi_output_size=14, sampling_ratio=2,
        representation_size=1024, out_channels=256, mask_layers=(256,) * 4,
        mask_dilation=1, mask_dim_reduced=256)
    for name, value in expected.items():
        assert getattr(c, name) == value, name

    m = MaskRCNN()
    assert m.num_classes == 91 and m.task == "instance"
    assert m.transform.min_size == (800,) and m.transform.max_size == 1333
    rpn = m.rpn
    assert rpn._pre_nms_top_n == {"training": 2000, "testing": 1000}
    assert rpn._post_nms_top_n == {"training": 2000, "testing": 1000}
    assert (rpn.nms_thresh, rpn.proposal_matcher.high_threshold,
            rpn.proposal_matcher.low_threshold) == (0.7, 0.7, 0.3)
    assert rpn.proposal_matcher.allow_low_quality_matches
    assert (rpn.fg_bg_sampler.batch_size_per_image,
            rpn.fg_bg_sampler.positive_fraction) == (256, 0.5)
    assert rpn.box_coder.weights == (1.0, 1.0, 1.0, 1.0)
    assert rpn.anchor_generator.num_anchors_per_location() == [3] * 5
    heads = m.roi_heads
    assert heads.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert not heads.proposal_matcher.allow_low_quality_matches
    assert (heads.fg_bg_sampler.batch_size_per_image,
            heads.fg_bg_sampler.positive_fraction) == (512, 0.25)
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == \
        (0.05, 0.5, 100)
    for pool, size in ((heads.box_roi_pool, 7), (heads.mask_roi_pool, 14)):
        assert pool.output_size == (size, size) and pool.sampling_ratio == 2
        assert pool.featmap_names == ["p2", "p3", "p4", "p5"]
    assert heads.box_head.fc6.in_features == 256 * 7 * 7
    assert heads.box_head.fc7.out_features == 1024
    up = heads.mask_predictor.conv5_mask
    assert (up.kernel_size, up.stride, up.out_channels) == ((2, 2), (2, 2), 256)
    assert isinstance(m.backbone.body.bn1, torch.nn.BatchNorm2d)


def test_profiles_shrink_sizes_anchors_and_counts():
    ci = MaskRCNNConfig.for_profile("ci", 64)
    assert (ci.min_size, ci.max_size) == (128, 214)  # small images: enlarged 2x
    assert ci.anchor_sizes == ((16, 23), (32, 45), (64, 91), (128, 181), (256, 362))
    big = MaskRCNNConfig.for_profile("cpu", 256)  # from 256 px: as they are
    assert (big.min_size, big.anchor_sizes) == (256, MaskRCNNConfig.anchor_sizes)
    assert ci.rpn_post_nms_top_n_test < MaskRCNNConfig.rpn_post_nms_top_n_test
    assert ci.box_batch_size_per_image < MaskRCNNConfig.box_batch_size_per_image
    gpu = MaskRCNNConfig.for_profile("gpu", 800)
    assert gpu == MaskRCNNConfig()  # torchvision's, at torchvision's size
    assert MaskRCNNConfig.for_profile("cpu", 96, box_nms_thresh=0.3).box_nms_thresh \
        == 0.3
    with pytest.raises(ValueError, match="profile"):
        MaskRCNNConfig.for_profile("laptop", 64)


def test_profile_anchors_reach_shapes_objects_at_the_rpn_threshold():
    """With the images enlarged 2x and two sizes per level, most Shapes objects
    have an anchor at the RPN's positive IoU (0.7); with one size per level at
    the images' own size, few do (the reason for the profile's choice)."""
    from utils.data.registry import build_dataset
    from utils.models.detection.anchors import AnchorGenerator
    from utils.models.detection.boxes import box_iou
    from utils.models.detection.image_list import ImageList

    val = build_dataset("shapes", "val", None, 64, 60, task="instance")
    boxes = torch.cat([val[i][1]["boxes"] for i in range(len(val))])

    def covered(cfg):
        side = cfg.min_size
        gen = AnchorGenerator(cfg.anchor_sizes, cfg.aspect_ratios)
        grids = [torch.zeros(1, 1, -(-side // s), -(-side // s))
                 for s in (4, 8, 16, 32, 64)]
        anchors = gen(ImageList(torch.zeros(1, 3, side, side), [(side, side)]),
                      grids)[0]
        best = box_iou(boxes * side / 64, anchors).max(dim=1).values
        return (best >= 0.7).float().mean().item()

    profile = covered(MaskRCNNConfig.for_profile("cpu", 64))
    one_size = covered(MaskRCNNConfig.for_profile(
        "cpu", 64, min_size=64, anchor_sizes=((8,), (16,), (32,), (64,), (128,))))
    assert profile > 0.7 and one_size < 0.3, (profile, one_size)


def test_registered_for_the_command_line():
    assert MODELS["maskrcnn"] is MaskRCNN and MaskRCNN.task == "instance"
    m = build_model("maskrcnn", 6, width=0.125, profile="ci", image_size=48)
    assert m.num_classes == 6 and m.width == 0.125
    assert m.transform.min_size == (96,)  # 48-pixel images enlarged 2x
    plain = build_model("maskrcnn", 6, width=0.125)  # MaskRCNN(6, width=0.125)
    assert plain.transform.min_size == (800,)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="num_classes"):
        MaskRCNNConfig(num_classes=1)
    with pytest.raises(ValueError, match="backbone_norm"):
        MaskRCNNConfig(backbone_norm="group")
    with pytest.raises(ValueError, match="same number of anchors"):
        MaskRCNNConfig(aspect_ratios=((1.0,),) + ((0.5, 1.0, 2.0),) * 4)


# --- torchvision's weights -----------------------------------------------------

def maskrcnn_state_dict(num_classes=91, seed=0):
    """The published ``maskrcnn_resnet50_fpn_coco`` file's keys and shapes,
    written out from torchvision's layout, with random values."""
    g = torch.Generator().manual_seed(seed)
    body = resnet_state_dict(50, seed=seed, num_batches=False)
    sd = {f"backbone.body.{k}": v for k, v in body.items() if not k.startswith("fc.")}

    def conv(name, cout, cin, k, std=None):
        std = std or math.sqrt(2 / (cin * k * k))
        sd[f"{name}.weight"] = std * torch.randn(cout, cin, k, k, generator=g)
        sd[f"{name}.bias"] = 0.1 * torch.randn(cout, generator=g)

    for i, cin in enumerate((256, 512, 1024, 2048)):
        conv(f"backbone.fpn.inner_blocks.{i}", 256, cin, 1)
    for i in range(4):
        conv(f"backbone.fpn.layer_blocks.{i}", 256, 256, 3)
    conv("rpn.head.conv", 256, 256, 3)
    conv("rpn.head.cls_logits", 3, 256, 1, std=0.1)
    conv("rpn.head.bbox_pred", 12, 256, 1, std=0.01)
    for name, (n_out, n_in) in {"fc6": (1024, 256 * 49), "fc7": (1024, 1024)}.items():
        sd[f"roi_heads.box_head.{name}.weight"] = \
            torch.randn(n_out, n_in, generator=g) / math.sqrt(n_in)
        sd[f"roi_heads.box_head.{name}.bias"] = 0.1 * torch.randn(n_out, generator=g)
    for name, n_out in {"cls_score": num_classes, "bbox_pred": 4 * num_classes}.items():
        sd[f"roi_heads.box_predictor.{name}.weight"] = \
            0.1 * torch.randn(n_out, 1024, generator=g)
        sd[f"roi_heads.box_predictor.{name}.bias"] = torch.zeros(n_out)
    for k in range(1, 5):
        conv(f"roi_heads.mask_head.mask_fcn{k}", 256, 256, 3)
    # a transposed convolution's weight is [in, out, kh, kw]
    sd["roi_heads.mask_predictor.conv5_mask.weight"] = \
        0.1 * torch.randn(256, 256, 2, 2, generator=g)
    sd["roi_heads.mask_predictor.conv5_mask.bias"] = 0.1 * torch.randn(256, generator=g)
    conv("roi_heads.mask_predictor.mask_fcn_logits", num_classes, 256, 1)
    return sd


@pytest.fixture(scope="module")
def coco_file():
    return maskrcnn_state_dict()


@pytest.fixture(scope="module")
def coco_model(coco_file):
    return maskrcnn_resnet50_fpn_coco(coco_file)


def test_parameter_names_and_shapes_are_the_published_files(coco_file, coco_model):
    ours = {k: tuple(v.shape) for k, v in coco_model.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in coco_file.items()}
    assert list(ours) == list(coco_model.torchvision_keys())
    # COCO's model: frozen batch norms with eps 0 (as torchvision sets them),
    # conv1 and layer1 frozen (trainable_backbone_layers=3).
    assert isinstance(coco_model.backbone.body.layer3[0].bn2, FrozenBatchNorm2d)
    assert coco_model.backbone.body.bn1.eps == 0.0
    trainable = {n.split(".")[2] for n, p in coco_model.named_parameters()
                 if p.requires_grad and n.startswith("backbone.body.")}
    assert trainable == {"layer2", "layer3", "layer4"}
    assert not coco_model.training


def test_the_published_file_loads_with_a_copy_loop(coco_file, coco_model, tmp_path):
    for key, value in coco_model.state_dict().items():
        assert torch.equal(value, coco_file[key]), key
    path = tmp_path / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    torch.save(coco_file, path)
    fresh = MaskRCNN(config=MaskRCNNConfig.coco())
    load_torchvision(fresh, path)  # the loader of every chapter, from the file
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, coco_file[key]), key


def test_todays_torchvision_names_load_too(coco_file):
    renamed = {}
    for key, value in coco_file.items():
        key = key.replace("inner_blocks.0.", "inner_blocks.0.0.")
        key = key.replace("layer_blocks.3.", "layer_blocks.3.0.")
        key = key.replace("rpn.head.conv.", "rpn.head.conv.0.0.")
        key = key.replace("mask_head.mask_fcn2.", "mask_head.1.0.")
        renamed[key] = value
    assert "rpn.head.conv.0.0.weight" in renamed
    assert published_names(renamed).keys() == coco_file.keys()
    m = MaskRCNN(config=MaskRCNNConfig.coco())
    m.load_pretrained(renamed)
    assert torch.equal(m.roi_heads.mask_head.mask_fcn2.weight,
                       coco_file["roi_heads.mask_head.mask_fcn2.weight"])


def test_other_class_counts_keep_their_predictors(coco_file):
    """Fine-tuning: with 6 classes the COCO predictors are ignored and keep
    their initialisation; everything else is loaded."""
    torch.manual_seed(1)
    m = MaskRCNN(6)
    before = m.roi_heads.box_predictor.cls_score.weight.clone()
    m.load_pretrained(coco_file)
    assert torch.equal(m.roi_heads.box_predictor.cls_score.weight, before)
    assert torch.equal(m.roi_heads.mask_head.mask_fcn1.weight,
                       coco_file["roi_heads.mask_head.mask_fcn1.weight"])


def test_weights_that_do_not_fit_are_named(coco_file):
    bad = dict(coco_file)
    bad["roi_heads.box_head.fc6.weight"] = torch.zeros(1024, 100)
    del bad["rpn.head.bbox_pred.bias"]
    with pytest.raises(ValueError) as err:
        MaskRCNN(config=MaskRCNNConfig.coco()).load_pretrained(bad)
    assert "rpn.head.bbox_pred.bias" in str(err.value)
    assert "roi_heads.box_head.fc6.weight" in str(err.value)
    with pytest.raises(ValueError, match="width"):
        MaskRCNN(91, width=0.5).load_pretrained(coco_file)


def test_loaded_layers_compute_what_the_state_dict_says(coco_file, coco_model):
    """FPN, RPN head, box head and mask head of the loaded model against the
    same layers written with torch.nn.functional over the state dict."""
    sd = coco_file
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        c = coco_model.backbone.body(x)
        p = coco_model.backbone(x)
        # FPN: lateral 1x1, top-down nearest x2 (sizes here are exact), 3x3.
        inner = [F.conv2d(c[f"layer{i + 1}"],
                          sd[f"backbone.fpn.inner_blocks.{i}.weight"],
                          sd[f"backbone.fpn.inner_blocks.{i}.bias"]) for i in range(4)]
        top = inner[3]
        expected = [None] * 4
        expected[3] = top
        for i in (2, 1, 0):
            top = inner[i] + top.repeat_interleave(2, 2).repeat_interleave(2, 3)
            expected[i] = top
        expected = [F.conv2d(t, sd[f"backbone.fpn.layer_blocks.{i}.weight"],
                             sd[f"backbone.fpn.layer_blocks.{i}.bias"], padding=1)
                    for i, t in enumerate(expected)]
        expected.append(expected[3][:, :, ::2, ::2])  # P6
        for name, want in zip(("p2", "p3", "p4", "p5", "p6"), expected):
            torch.testing.assert_close(p[name], want, rtol=1e-4, atol=1e-4)

        logits, deltas = coco_model.rpn.head([p["p3"]])
        t = F.relu(F.conv2d(p["p3"], sd["rpn.head.conv.weight"],
                            sd["rpn.head.conv.bias"], padding=1))
        torch.testing.assert_close(logits[0], F.conv2d(
            t, sd["rpn.head.cls_logits.weight"], sd["rpn.head.cls_logits.bias"]))
        torch.testing.assert_close(deltas[0], F.conv2d(
            t, sd["rpn.head.bbox_pred.weight"], sd["rpn.head.bbox_pred.bias"]))

        pooled = torch.randn(5, 256, 7, 7)
        h = F.relu(F.linear(pooled.flatten(1), sd["roi_heads.box_head.fc6.weight"],
                            sd["roi_heads.box_head.fc6.bias"]))
        h = F.relu(F.linear(h, sd["roi_heads.box_head.fc7.weight"],
                            sd["roi_heads.box_head.fc7.bias"]))
        scores, boxes = coco_model.roi_heads.box_predictor(
            coco_model.roi_heads.box_head(pooled))
        torch.testing.assert_close(scores, F.linear(
            h, sd["roi_heads.box_predictor.cls_score.weight"],
            sd["roi_heads.box_predictor.cls_score.bias"]), rtol=1e-4, atol=1e-4)
        assert boxes.shape == (5, 4 * 91)

        pooled = torch.randn(3, 256, 14, 14)
        h = pooled
        for k in range(1, 5):
            h = F.relu(F.conv2d(h, sd[f"roi_heads.mask_head.mask_fcn{k}.weight"],
                                sd[f"roi_heads.mask_head.mask_fcn{k}.bias"], padding=1))
        h = F.relu(F.conv_transpose2d(
            h, sd["roi_heads.mask_predictor.conv5_mask.weight"],
            sd["roi_heads.mask_predictor.conv5_mask.bias"], stride=2))
        want = F.conv2d(h, sd["roi_heads.mask_predictor.mask_fcn_logits.weight"],
                        sd["roi_heads.mask_predictor.mask_fcn_logits.bias"])
        heads = coco_model.roi_heads
        got = heads.mask_predictor(heads.mask_head(pooled))
        assert got.shape == (3, 91, 28, 28)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# --- train and eval contracts --------------------------------------------------

def test_training_returns_torchvisions_five_losses_and_every_weight_learns():
    model = small_model().train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 80)]  # two sizes
    targets = [target([(4, 4, 30, 28), (30, 20, 60, 60)], [1, 3], (64, 64)),
               target([(10, 5, 70, 40)], [2], (48, 80))]
    kept = {k: v.clone() for k, v in targets[0].items()}
    losses = model(images, targets)
    assert list(losses) == list(LOSSES)
    for name, value in losses.items():
        assert value.ndim == 0 and value.dtype == torch.float32, name
        assert torch.isfinite(value) and value > 0, name
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    for key, value in kept.items():  # the caller's targets are not resized
        assert torch.equal(targets[0][key], value), key


def test_an_image_without_objects_trains():
    model = small_model().train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [target([], [], (64, 64)), target([(8, 8, 40, 40)], [1], (64, 64))]
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    # Only background: no positive RoI, so no mask loss and no box regression.
    losses = model(images[:1], targets[:1])
    assert losses["loss_mask"] == 0 and losses["loss_box_reg"] == 0
    assert losses["loss_rpn_box_reg"] == 0 and losses["loss_objectness"] > 0
    sum(losses.values()).backward()


def test_evaluation_returns_detections_in_each_images_frame():
    model = small_model(box_score_thresh=0.0).eval()
    sizes = [(64, 64), (40, 90)]
    with torch.no_grad():
        out = model([torch.rand(3, *s) for s in sizes])
    assert len(out) == 2
    for o, (h, w) in zip(out, sizes):
        assert set(o) == {"boxes", "labels", "scores", "masks"}
        n = len(o["scores"])
        assert 0 < n <= model.config.box_detections_per_img
        assert o["boxes"].shape == (n, 4) and o["boxes"].dtype == torch.float32
        assert o["labels"].dtype == torch.int64
        assert ((o["labels"] >= 1) & (o["labels"] < 4)).all()
        assert (o["scores"][:-1] >= o["scores"][1:]).all()  # best first
        assert o["masks"].shape == (n, 1, h, w) and o["masks"].dtype == torch.float32
        assert o["masks"].min() >= 0 and o["masks"].max() <= 1
        b = o["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all()
        assert (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("masks"), "lacks"),
    (lambda t: t.update(labels=torch.tensor([0])), "0 is the background"),
    (lambda t: t.update(labels=torch.tensor([4])), r"1 \.\. 3"),
    (lambda t: t.update(labels=torch.tensor([1.0])), "int64"),
    (lambda t: t.update(boxes=torch.tensor([[5.0, 5.0, 5.0, 9.0]])), "x2 > x1"),
    (lambda t: t.update(masks=torch.zeros(1, 32, 32, dtype=torch.uint8)), "masks"),
])
def test_bad_targets_are_named(change, message):
    model = small_model().train()
    t = target([(4, 4, 20, 20)], [1], (64, 64))
    change(t)
    with pytest.raises(ValueError, match=message):
        model([torch.rand(3, 64, 64)], [t])


def test_bad_images_are_named():
    model = small_model()
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        model.eval()([torch.rand(1, 3, 64, 64)])
    with pytest.raises(TypeError, match="list"):
        model.eval()(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="needs targets"):
        model.train()([torch.rand(3, 64, 64)])


# --- the pieces, on hand-made cases -------------------------------------------

def test_transform_resizes_pads_and_maps_back():
    t = GeneralizedRCNNTransform(100, 150, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()
    images = [torch.full((3, 50, 60), 0.75), torch.full((3, 20, 100), 0.75)]
    batch, _ = t(images)
    # 50x60: shorter side to 100 (x2); 20x100: x5 would make 500 > 150, so x1.5
    assert batch.image_sizes == [(100, 120), (30, 150)]
    assert batch.tensors.shape == (2, 3, 128, 160)  # padded to multiples of 32
    assert torch.allclose(batch.tensors[0, :, :100, :120], torch.tensor(1.0))
    assert (batch.tensors[0, :, 100:] == 0).all()
    assert (batch.tensors[1, :, 30:] == 0).all()
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    there = resize_boxes(boxes, (50, 60), (100, 120))
    assert torch.equal(there, torch.tensor([[20.0, 40.0, 60.0, 80.0]]))
    assert torch.equal(resize_boxes(there, (100, 120), (50, 60)), boxes)
    t.train()
    tg = target([(10, 10, 20, 30)], [1], (50, 60))
    _, (out,) = t([images[0]], [tg])
    assert torch.equal(out["boxes"], torch.tensor([[20.0, 20.0, 40.0, 60.0]]))
    assert out["masks"].shape == (1, 100, 120) and out["masks"].dtype == torch.uint8
    assert out["masks"].sum() == 4 * tg["masks"].sum()  # nearest: each pixel x4


def test_fastrcnn_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    deltas = torch.zeros(2, 12)
    deltas[1, 8:12] = torch.tensor([0.05, -1.0, 0.0, 0.5])  # class 2's deltas
    targets = [torch.zeros(2, 4)]
    cls, box = fastrcnn_loss(logits, deltas, [torch.tensor([0, 2])], targets)
    ce = [-torch.log_softmax(logits[0], 0)[0], -torch.log_softmax(logits[1], 0)[2]]
    assert torch.isclose(cls, (ce[0] + ce[1]) / 2)
    # smooth L1, beta 1/9: 0.5 x^2 / beta below beta, |x| - beta / 2 above;
    # summed over the positive's 4 numbers, divided by the 2 sampled RoIs.
    beta = 1 / 9
    by_hand = 0.5 * 0.05**2 / beta + (1.0 - beta / 2) + 0 + (0.5 - beta / 2)
    assert torch.isclose(box, torch.tensor(by_hand / 2))


def test_mask_loss_uses_only_the_true_class_and_the_roi_aligned_target():
    # one 8x8 image holding one object: the left half of a 4x4 square
    gt = torch.zeros(1, 8, 8, dtype=torch.uint8)
    gt[0, 2:6, 2:4] = 1
    proposal = torch.tensor([[2.0, 2.0, 6.0, 6.0]])  # the square itself
    logits = torch.zeros(1, 3, 4, 4)
    logits[0, 1] = 100.0  # a wrong class's mask: must not count
    logits[0, 2] = torch.tensor([[3.0, 3.0, -3.0, -3.0]] * 4)
    loss = maskrcnn_loss(logits, [proposal], [gt], [torch.tensor([2])],
                         [torch.tensor([0])])
    # RoIAlign (aligned=False, 1 sample per bin) samples the mask at 2.5, 3.5,
    # 4.5, 5.5 in pixel-index coordinates: 3.5 lies halfway between the last
    # column inside (3) and the first outside (4), and 5.5 between rows 5 and 6.
    rx, ry = torch.tensor([1.0, 0.5, 0.0, 0.0]), torch.tensor([1.0, 1.0, 1.0, 0.5])
    target_mask = ry[:, None] * rx[None, :]
    x = logits[0, 2]
    by_hand = -(target_mask * F.logsigmoid(x) + (1 - target_mask) * F.logsigmoid(-x))
    assert torch.isclose(loss, by_hand.mean())
    none = maskrcnn_loss(logits[:0], [proposal[:0]], [gt], [torch.tensor([2])],
                         [torch.tensor([], dtype=torch.int64)])
    assert none == 0


def test_mask_inference_keeps_the_predicted_classs_mask():
    logits = torch.randn(3, 4, 5, 5)
    labels = [torch.tensor([3, 1]), torch.tensor([2])]
    probs = maskrcnn_inference(logits, labels)
    assert [p.shape for p in probs] == [(2, 1, 5, 5), (1, 1, 5, 5)]
    torch.testing.assert_close(probs[0][1, 0], logits[1, 1].sigmoid())
    torch.testing.assert_close(probs[1][0, 0], logits[2, 2].sigmoid())


def test_detection_postprocessing_by_hand():
    """Two proposals, three classes: softmax scores, class-specific boxes, the
    score threshold, NMS within a class only, best first."""
    heads = small_model().roi_heads
    heads.score_thresh, heads.nms_thresh = 0.2, 0.5
    proposals = [torch.tensor([[10.0, 10.0, 30.0, 30.0], [12.0, 10.0, 32.0, 30.0]])]
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3, 0.0001],
                                     [0.1, 0.5, 0.15, 0.25]]))
    deltas = torch.zeros(2, 16)  # every class keeps the proposal's box
    boxes, scores, labels = heads.postprocess_detections(logits, deltas, proposals,
                                                         [(64, 64)])
    # class 1: 0.6 and 0.5 overlap (IoU 18/22 > 0.5): one kept; class 2: 0.3
    # kept, 0.15 below threshold; class 3: 0.25 kept.
    torch.testing.assert_close(scores[0], torch.tensor([0.6, 0.3, 0.25]), atol=1e-4,
                               rtol=0)
    assert labels[0].tolist() == [1, 2, 3]
    assert torch.equal(boxes[0], torch.stack([proposals[0][0], proposals[0][0],
                                              proposals[0][1]]))


def test_rpn_proposals_are_per_level_top_k_then_per_level_nms():
    rpn = small_model().rpn.eval()
    rpn._pre_nms_top_n["testing"], rpn._post_nms_top_n["testing"] = 2, 3
    # Two levels of 2x2 and 1x1 positions with one anchor each (a stand-in
    # anchor generator), objectness and zero deltas given directly.
    anchors = [torch.tensor([[0.0, 0.0, 16.0, 16.0], [1.0, 0.0, 17.0, 16.0],
                             [0.0, 16.0, 16.0, 32.0], [16.0, 16.0, 32.0, 32.0],
                             [0.0, 0.0, 17.0, 16.0]])]
    objectness = torch.tensor([[0.9, 0.8, 0.1, 0.2, 0.95]]).logit()
    boxes, scores = rpn.filter_proposals(anchors[0][None], objectness, [(32, 32)],
                                         [4, 1])
    # level 0: top 2 are anchors 0 and 1, which overlap (IoU 15/17 > 0.7): 0
    # suppresses 1; level 1: anchor 4 (overlaps 0, but another level).
    torch.testing.assert_close(scores[0], torch.tensor([0.95, 0.9]))
    assert torch.equal(boxes[0], anchors[0][[4, 0]])


def test_rpn_loss_by_hand():
    rpn = small_model().rpn
    rpn.fg_bg_sampler.batch_size_per_image = 4
    objectness = torch.tensor([[2.0], [-1.0], [0.5], [0.0]])
    deltas = torch.tensor([[0.1, 0.0, 0.0, 0.0]] + [[0.0] * 4] * 3)
    labels = [torch.tensor([1.0, 0.0, 0.0, -1.0])]
    targets = [torch.zeros(4, 4)]
    obj, box = rpn.compute_loss(objectness, deltas, labels, targets)
    x, y = objectness[:3, 0], labels[0][:3]  # the ignored anchor is not sampled
    assert torch.isclose(obj, F.binary_cross_entropy_with_logits(x, y))
    # |0.1| < beta = 1/9: the quadratic part, 0.5 x^2 / beta; over 3 sampled
    assert torch.isclose(box, torch.tensor(0.5 * 0.1**2 * 9 / 3))


# --- the command line -----------------------------------------------------------

TINY = ["--epochs", "1", "--train-size", "8", "--val-size", "4", "--image-size",
        "48", "--batch-size", "4", "--width", "0.125", "--no-progress"]


def test_trains_from_the_command_line_on_shapes(tmp_path, capsys):
    import csv

    from utils.train.cli import main

    out = tmp_path / "run"
    assert main(["--model", "maskrcnn", "--data", "shapes", "--out", str(out),
                 *TINY]) == 0
    printed = capsys.readouterr().out
    assert "best mask AP" in printed
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "train_loss", *LOSSES, "box_ap", "box_ap50",
                             "mask_ap", "mask_ap50", "lr", "seconds"]
    row = rows[0]
    assert float(row["train_loss"]) == pytest.approx(
        sum(float(row[k]) for k in LOSSES), rel=1e-5)
    for k in ("box_ap", "mask_ap"):
        assert row[k] == "nan" or 0 <= float(row[k]) <= 1
    assert (out / "predictions.png").read_bytes()[:4] == b"\x89PNG"


def write_tiny_coco(root, split, count=3, size=(40, 56)):
    """A COCO-format folder (annotations json with polygons, RLE and a crowd
    region; jpg images) as data_scripts.coco leaves it."""
    import json

    import numpy as np
    from PIL import Image

    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / f"{split}2017").mkdir(exist_ok=True)
    rng = np.random.default_rng(0 if split == "train" else 1)
    images, annotations = [], []
    h, w = size
    for i in range(count):
        name = f"{i + 1:012d}.jpg"
        pixels = (rng.random((h, w, 3)) * 60).astype(np.uint8)
        x, y = 4 + 3 * i, 6 + i
        pixels[y:y + 16, x:x + 20] = 220  # a bright "object"
        Image.fromarray(pixels).save(root / f"{split}2017" / name)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        polygon = [x, y, x + 20, y, x + 20, y + 16, x, y + 16]
        annotations.append({"id": 10 * i + 1, "image_id": i + 1, "category_id": 18,
                            "segmentation": [polygon], "iscrowd": 0})
        annotations.append({"id": 10 * i + 2, "image_id": i + 1, "category_id": 1,
                            "segmentation": {"size": [h, w],
                                             "counts": [h * 40 + 2, 30,
                                                        h * w - h * 40 - 32]},
                            "iscrowd": 0})
        annotations.append({"id": 10 * i + 3, "image_id": i + 1, "category_id": 1,
                            "segmentation": {"size": [h, w],
                                             "counts": [h * 50, 2 * h,
                                                        h * w - h * 52]},
                            "iscrowd": 1})
    (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(
        {"images": images, "annotations": annotations,
         "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]}))


def test_trains_from_the_command_line_on_a_coco_folder(tmp_path, capsys):
    from utils.train.cli import main

    root = tmp_path / "coco"
    for split in ("train", "val"):
        write_tiny_coco(root, split)
    out = tmp_path / "run"
    assert main(["--model", "maskrcnn", "--data", "coco", "--data-root", str(root),
                 "--out", str(out), "--epochs", "1", "--image-size", "32",
                 "--batch-size", "3", "--width", "0.125", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "3 train / 3 val images" in printed and "best mask AP" in printed


def test_a_run_resumes_exactly(tmp_path):
    from utils.data.registry import build_dataset
    from utils.train import InstanceTask, TrainConfig, fit

    train = build_dataset("shapes", "train", None, 48, 8, train=True, task="instance")
    val = build_dataset("shapes", "val", None, 48, 4, task="instance")
    config = TrainConfig(epochs=2, batch_size=4, lr=1e-3, progress=False)

    class Stop(Exception):
        pass

    def run(**kw):
        torch.manual_seed(0)
        return fit(small_model(6, 48), train, val, config, task=InstanceTask(6),
                   device="cpu", **kw)

    def quiet(message):
        pass

    def dies_after_epoch_one(message):
        if message.startswith("epoch 1/"):
            raise Stop

    straight = run(log=quiet)
    with pytest.raises(Stop):
        run(out_dir=tmp_path, log=dies_after_epoch_one)
    resumed = run(out_dir=tmp_path, resume=tmp_path / "checkpoint.pt", log=quiet)
    for a, b in zip(straight, resumed):
        for key in ("train_loss", *LOSSES, "box_ap", "mask_ap", "lr"):
            assert a[key] == b[key] or (a[key] != a[key] and b[key] != b[key]), key
