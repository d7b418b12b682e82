"""Panoptic FPN (utils.models.panoptic): the semantic branch against a
functional reference, the training and evaluation contracts of the panoptic
task, the weighted joint loss and the named errors."""

import pytest
import torch
import torch.nn.functional as F

from utils.data import shapes
from utils.data.registry import build_dataset
from utils.models import MODELS, build_model
from utils.models.panoptic import (
    PanopticFPN,
    PanopticFPNConfig,
    SemanticFPNHead,
    panoptic_fusion,
)

THINGS, K = shapes.THING_IDS, shapes.NUM_CLASSES


def tiny(**fields):
    torch.manual_seed(0)
    return PanopticFPN.for_profile("ci", 32, K, width=0.0625, thing_ids=THINGS,
                                   **fields)


@pytest.fixture(scope="module")
def batch():
    ds = build_dataset("shapes", "val", image_size=32, length=2, task="panoptic")
    images, targets = zip(*[ds[i] for i in range(2)])
    return list(images), list(targets)


def test_registered_and_sized_for_the_profile():
    assert MODELS["panoptic_fpn"] is PanopticFPN
    model = build_model("panoptic_fpn", K, 0.0625, profile="ci", image_size=64,
                        thing_ids=THINGS)
    assert isinstance(model, PanopticFPN) and model.task == "panoptic"
    assert model.detector.num_classes == len(THINGS) + 1
    assert model.stuff_ids == shapes.STUFF_IDS
    # detectron2's 4096 pixels at 800 pixels, scaled to 64-pixel images.
    assert model.config.fusion.stuff_min_area == round(4096 * (64 / 800) ** 2)
    assert model.semantic_head.predictor.out_channels == len(shapes.STUFF_IDS) + 1
    defaults = PanopticFPNConfig()
    assert (defaults.semantic_channels, defaults.semantic_loss_weight,
            defaults.instance_loss_weight) == (128, 0.5, 1.0)


def reference_branch(head, features):
    """The semantic branch with functional ops, reading the head's weights."""
    total = 0
    for k, name in enumerate(head.levels):
        x = features[name]
        for stage in head.scale_heads[k]:
            conv, gn = stage[0], stage[1]
            x = F.relu(F.group_norm(F.conv2d(x, conv.weight, padding=1),
                                    gn.num_groups, gn.weight, gn.bias, gn.eps))
            if k > 0:
                x = F.interpolate(x, scale_factor=2.0, mode="bilinear",
                                  align_corners=False)
        total = total + x
    scores = F.conv2d(total, head.predictor.weight, head.predictor.bias)
    return F.interpolate(scores, scale_factor=4.0, mode="bilinear",
                         align_corners=False)


def test_semantic_branch_sums_every_level_at_quarter_scale():
    torch.manual_seed(0)
    head = SemanticFPNHead(8, 5, channels=16)
    for p in head.parameters():  # away from the tiny predictor initialisation
        torch.nn.init.normal_(p, std=0.3)
    features = {f"p{k}": torch.randn(2, 8, 32 >> (k - 2), 48 >> (k - 2))
                for k in range(2, 7)}
    assert [len(h) for h in head.scale_heads] == [1, 1, 2, 3]
    assert head.merge(features).shape == (2, 16, 32, 48)
    out = head(features)
    assert out.shape == (2, 5, 128, 192)
    torch.testing.assert_close(out, reference_branch(head, features))
    with pytest.raises(ValueError, match="missing"):
        head({"p2": features["p2"]})


def test_group_norm_groups_keep_two_channels_each():
    from utils.models.panoptic.semantic_head import norm_groups
    # 32 groups at the paper's 128 channels; scaled widths keep >= 2 per group.
    assert [norm_groups(c) for c in (128, 256, 64, 16, 8, 24, 2, 1)] == \
        [32, 32, 32, 8, 4, 12, 1, 1]


def test_training_returns_six_weighted_losses_and_both_branches_learn(batch):
    images, targets = batch
    model = tiny().train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask",
                           "loss_objectness", "loss_rpn_box_reg", "loss_sem_seg"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in ("semantic_head.predictor.weight", "semantic_head.scale_heads.3.0.0."
                 "weight", "detector.backbone.body.conv1.weight",
                 "detector.roi_heads.mask_predictor.mask_fcn_logits.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_semantic_loss_is_the_weighted_mean_over_labelled_pixels(batch):
    images, targets = batch
    model = tiny().train()
    state = model.state_dict()
    half = model(images, targets)["loss_sem_seg"].detach()
    full = tiny(semantic_loss_weight=1.0)
    full.load_state_dict(state)
    whole = full.train()(images, targets)["loss_sem_seg"].detach()
    torch.testing.assert_close(whole, 2 * half)
    # The predictor starts near zero: scores about equal over the S + 1
    # branch classes, so the cross-entropy is about log(S + 1).
    S1 = len(shapes.STUFF_IDS) + 1
    assert abs(whole.item() - torch.log(torch.tensor(float(S1)))) < 0.05
    # Only void pixels: nothing to learn from, the loss is zero.
    void = [{**t, "semantic": torch.full_like(t["semantic"], 255)} for t in targets]
    assert full(images, void)["loss_sem_seg"].item() == 0.0


def test_evaluation_returns_panoptic_maps_in_each_images_frame():
    model = tiny().eval()
    # Fuse everything the detector finds, so that things are pasted.
    model.config = PanopticFPNConfig(
        detector=model.config.detector,
        fusion=type(model.config.fusion)(score_thresh=0.0, stuff_min_area=1))
    torch.manual_seed(1)
    images = [torch.rand(3, 32, 32), torch.rand(3, 24, 40)]
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o, img in zip(out, images):
        H, W = img.shape[-2:]
        pan = o["panoptic"]
        assert pan.shape == (H, W, 2) and pan.dtype == torch.int64
        assert o["semantic"].shape == (H, W)
        cats = set(pan[..., 0].unique().tolist())
        assert cats <= set(range(K)) | {255}
        stuff = torch.isin(pan[..., 0], torch.tensor(shapes.STUFF_IDS))
        assert (pan[..., 1][stuff] == 0).all()
        categories = torch.tensor(THINGS)[o["labels"] - 1]
        want = panoptic_fusion(o["semantic"], o["masks"], o["scores"], categories,
                               shapes.STUFF_IDS, model.config.fusion)
        assert torch.equal(pan, want)
    assert any(len(o["scores"]) for o in out)  # the check saw some things


@pytest.mark.parametrize("change, message", [
    (lambda t: {k: v for k, v in t.items() if k != "semantic"}, "lacks 'semantic'"),
    (lambda t: {**t, "semantic": t["semantic"][:10]}, "must be int64"),
    (lambda t: {**t, "semantic": t["semantic"].clamp(max=7) + 2}, "outside 0 .. 7"),
])
def test_bad_targets_are_named(batch, change, message):
    images, targets = batch
    model = tiny().train()
    with pytest.raises(ValueError, match=message):
        model(images, [change(t) for t in targets])


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="needs thing_ids"):
        PanopticFPN(K, 0.0625, thing_ids=())
    with pytest.raises(ValueError, match="distinct ids"):
        PanopticFPN(K, 0.0625, thing_ids=(3, 3))
    with pytest.raises(ValueError, match="at least one stuff"):
        PanopticFPN(3, 0.0625, thing_ids=(0, 1, 2))


def test_semantic_fpn_is_the_branch_on_its_own_backbone():
    torch.manual_seed(0)
    model = MODELS["semantic_fpn"](K, width=0.0625).eval()
    images = torch.rand(2, 3, 40, 56)  # not multiples of 32: padded, then cropped
    with torch.no_grad():
        out = model(images)
        x = (images - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / \
            torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        padded = torch.zeros(2, 3, 64, 64)
        padded[..., :40, :56] = x
        want = model.head(model.backbone(padded))[..., :40, :56]
    assert out.shape == (2, K, 40, 56)
    torch.testing.assert_close(out, want)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.rand(3, 32, 32))


def test_two_networks_fused_follow_the_panoptic_contract():
    from utils.models.panoptic import SeparatePanoptic
    torch.manual_seed(0)
    semantic = MODELS["semantic_fpn"](K, width=0.0625)
    instance = MODELS["maskrcnn"].for_profile("ci", 32, len(THINGS) + 1, width=0.0625)
    fusion = type(tiny().config.fusion)(score_thresh=0.0, stuff_min_area=1)
    model = SeparatePanoptic(semantic, instance, THINGS, shapes.STUFF_IDS,
                             fusion).eval()
    images = [torch.rand(3, 32, 32)]
    with torch.no_grad():
        out = model(images)[0]
        sem = semantic(images[0][None]).argmax(1)[0]
    assert torch.equal(out["semantic"], sem)
    want = panoptic_fusion(sem, out["masks"], out["scores"],
                           torch.tensor(THINGS)[out["labels"] - 1], shapes.STUFF_IDS,
                           fusion)
    assert torch.equal(out["panoptic"], want)
    with pytest.raises(RuntimeError, match="only predicts"):
        model.train()(images)
