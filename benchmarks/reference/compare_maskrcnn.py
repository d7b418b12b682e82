"""The course's Mask R-CNN against torchvision's, same weights, same images.

Needs the reference environment (torchvision; not a course dependency)::

    /work/refvenv/bin/python benchmarks/reference/compare_maskrcnn.py \\
        [--threads 2] [--repeats 5] [--score-thresh 0.01] [--weights FILE]

It builds torchvision's ``maskrcnn_resnet50_fpn`` exactly as its COCO model
is built (ResNet-50 with ``FrozenBatchNorm2d``, ``eps`` set to 0, 91 classes),
with random weights unless ``--weights`` names the published file
(``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``). Random weights are made less
degenerate: the frozen batch norms get random statistics and affine
parameters, and the class and objectness logits are scaled up, so that
scores spread over [0, 1] instead of all sitting near 1/91; the score
threshold is lowered (``--score-thresh``) so that enough detections pass.

The state dict, renamed to the published file's key names, is loaded into
the course's model with :func:`maskrcnn_resnet50_fpn_coco` (which calls
:func:`utils.models.load_torchvision`). Both run in eval mode on the same
images (matplotlib's ``grace_hopper.jpg``, a real photograph; a random image;
and a batch of two images of different sizes), and the script prints, per
image, the number of detections of each, how many are the same detection
(same rank, same label, box IoU above 0.999 or corners within 0.01 pixel),
and the largest absolute difference of boxes, scores and pasted mask
probabilities over those.

In training mode, both (torchvision's random initialisation with batch norm,
as ``maskrcnn_resnet50_fpn(weights=None)`` builds it, images resized to 320)
take the same two images and targets from the same random seed (the samplers
draw the same anchors and proposals) and the script prints the five losses of
each and the largest relative difference of the gradients.

It then times both on the photograph with the same thread count, interleaved
(A, B, B, A, ...) so that a change in the machine's load hits both, as a
whole and stage by stage (transform, backbone + FPN, RPN, RoI heads,
postprocessing with mask pasting), and prints the medians of wall and process
CPU time and the course / torchvision ratios. The course's code is imported
from this checkout (added to ``sys.path``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import matplotlib.cbook
import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.models.detection import MaskRCNN as TVMaskRCNN
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d as TVFrozenBatchNorm2d
from torchvision.ops import box_iou as tv_box_iou

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from utils.models.detection.mask_rcnn import (  # noqa: E402
    MaskRCNN,
    MaskRCNNConfig,
    maskrcnn_resnet50_fpn_coco,
    published_names,
)


def torchvision_model(score_thresh: float, weights, seed: int) -> torch.nn.Module:
    """torchvision's COCO Mask R-CNN: the published weights, or random ones."""
    torch.manual_seed(seed)
    body = torchvision.models.resnet50(norm_layer=TVFrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 3)
    model = TVMaskRCNN(backbone, num_classes=91, box_score_thresh=score_thresh)
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu",
                                         weights_only=True))
    else:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, TVFrozenBatchNorm2d):
                    c = m.weight.numel()
                    m.weight.copy_(0.5 + torch.rand(c, generator=g))
                    m.bias.copy_(0.1 * torch.randn(c, generator=g))
                    m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                    m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            # Decisive logits: scores spread over [0, 1] (see the docstring).
            model.roi_heads.box_predictor.cls_score.weight.mul_(30.0)
            model.rpn.head.cls_logits.weight.mul_(100.0)
    overwrite_eps(model, 0.0)  # as torchvision does for its COCO file
    return model.eval()


def read_image(path) -> torch.Tensor:
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)


def compare(tv_out: dict, ours: dict) -> dict:
    """Detections of one image: counts, matches and largest differences."""
    n_tv, n_ours = len(tv_out["scores"]), len(ours["scores"])
    n = min(n_tv, n_ours)
    same = torch.zeros(n, dtype=torch.bool)
    if n:
        iou = tv_box_iou(tv_out["boxes"][:n], ours["boxes"][:n]).diagonal()
        # Random weights give slivers (a box 0.01 pixel high), whose IoU is
        # not 0.999 even when the corners agree to 1e-4: corners within a
        # hundredth of a pixel count as the same box too.
        corners = (tv_out["boxes"][:n] - ours["boxes"][:n]).abs().amax(dim=1)
        same = (tv_out["labels"][:n] == ours["labels"][:n]) & (
            (iou > 0.999) | (corners < 1e-2))
    # Matches are counted in rank order up to the first difference (after
    # which near-tied scores may swap ranks), and over all ranks.
    prefix = int(same.long().cumprod(0).sum()) if n else 0
    k = torch.where(same)[0]
    diff = {"boxes": 0.0, "scores": 0.0, "masks": 0.0}
    if len(k):
        for key in diff:
            diff[key] = (tv_out[key][k] - ours[key][k]).abs().max().item()
    return {"torchvision": n_tv, "course": n_ours, "same": int(same.sum()),
            "same_prefix": prefix, **diff}


def compare_training(photo: torch.Tensor, seed: int) -> None:
    """Train-mode losses and gradients of both on the same batch and seed."""
    sizes = dict(min_size=320, max_size=512)
    torch.manual_seed(seed)
    tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91,
                               **sizes).train()
    ours = MaskRCNN(config=MaskRCNNConfig(**sizes)).train()
    ours.load_pretrained(tv.state_dict())  # today's torchvision names
    g = torch.Generator().manual_seed(seed)
    images = [photo, torch.rand(3, 300, 420, generator=g)]
    targets = []
    for image in images:
        h, w = image.shape[1:]
        boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.8],
                              [0.2, 0.5, 0.45, 0.95]]) * torch.tensor([w, h, w, h])
        masks = torch.zeros(3, h, w, dtype=torch.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, boxes.round().long().tolist()):
            m[y1:y2, x1:(x1 + x2) // 2 + 1] = 1  # the box's left half
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 18, 3]),
                        "masks": masks})
    losses = {}
    for name, model in (("torchvision", tv), ("course", ours)):
        torch.manual_seed(seed + 1)  # the same anchors and proposals sampled
        losses[name] = model(images, [dict(t) for t in targets])
        sum(losses[name].values()).backward()
    print("\ntraining mode, same weights, images and seed:")
    for key, value in losses["torchvision"].items():
        other = losses["course"][key]
        print(f"  {key:18s} torchvision {value.item():.6f}  course {other.item():.6f}"
              f"  |diff| {abs(value.item() - other.item()):.1e}")
    ours_params = dict(ours.named_parameters())
    worst = 0.0
    for key, p in tv.named_parameters():
        mine = ours_params[next(iter(published_names({key: None})))]
        if p.grad is not None:
            scale = p.grad.abs().max().item() or 1.0
            worst = max(worst, (p.grad - mine.grad).abs().max().item() / scale)
    print(f"  gradients: largest difference relative to the parameter's largest "
          f"gradient {worst:.1e}")


def stage_times(model, images, original_sizes):
    """Wall and CPU seconds of each stage of one forward pass."""
    times = {}

    def clock(name, fn, *args):
        w, c = time.perf_counter(), time.process_time()
        out = fn(*args)
        times[name] = (time.perf_counter() - w, time.process_time() - c)
        return out

    image_list, _ = clock("transform", model.transform, images)
    features = clock("backbone+FPN", model.backbone, image_list.tensors)
    proposals, _ = clock("RPN", model.rpn, image_list, features)
    detections, _ = clock("RoI heads", model.roi_heads, features, proposals,
                          image_list.image_sizes)
    clock("postprocess", model.transform.postprocess, detections,
          image_list.image_sizes, original_sizes)
    times["total"] = tuple(sum(t[i] for t in times.values()) for i in (0, 1))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs of each model (0: no timing)")
    parser.add_argument("--score-thresh", type=float, default=0.01)
    parser.add_argument("--weights", type=Path, default=None,
                        help="maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth (default: "
                        "random weights)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{platform.processor() or platform.machine()}, {args.threads} thread(s), "
          f"weights: {args.weights or 'random'}, box_score_thresh "
          f"{args.score_thresh}")

    tv = torchvision_model(args.score_thresh, args.weights, args.seed)
    ours = maskrcnn_resnet50_fpn_coco(published_names(tv.state_dict()),
                                      box_score_thresh=args.score_thresh)

    photo = read_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg"))
    g = torch.Generator().manual_seed(args.seed)
    cases = {
        "grace_hopper.jpg": [photo],
        "random 480x640": [torch.rand(3, 480, 640, generator=g)],
        "batch: photo + random 300x500": [photo, torch.rand(3, 300, 500, generator=g)],
    }
    print("\nagreement (same = same rank, label and box IoU > 0.999 or corners "
          "within 0.01 px; differences over those):")
    print(f"{'images':32} {'image':>5} {'tv':>4} {'ours':>4} {'same':>4} "
          f"{'prefix':>6} {'boxes':>9} {'scores':>9} {'masks':>9}")
    with torch.no_grad():
        for name, images in cases.items():
            for i, (a, b) in enumerate(zip(tv(images), ours(images))):
                r = compare(a, b)
                print(f"{name:32} {i:>5} {r['torchvision']:>4} {r['course']:>4} "
                      f"{r['same']:>4} {r['same_prefix']:>6} {r['boxes']:9.2e} "
                      f"{r['scores']:9.2e} {r['masks']:9.2e}")

    compare_training(photo, args.seed)
    if args.repeats == 0:
        return

    print(f"\nCPU inference on grace_hopper.jpg {list(photo.shape[1:])}, "
          f"{args.threads} thread(s), median of {args.repeats} (interleaved):")
    records = {"torchvision": [], "course": []}
    with torch.inference_mode():
        for model in (tv, ours):  # warm-up
            stage_times(model, [photo], [tuple(photo.shape[1:])])
        for r in range(args.repeats):
            order = (("torchvision", tv), ("course", ours))
            for name, model in (order if r % 2 == 0 else order[::-1]):
                records[name].append(stage_times(model, [photo],
                                                 [tuple(photo.shape[1:])]))
    stages = list(records["torchvision"][0])
    print(f"{'stage':14} {'tv wall ms':>10} {'ours wall':>10} {'ratio':>6} "
          f"{'tv CPU ms':>10} {'ours CPU':>10} {'ratio':>6}")
    for stage in stages:
        med = {k: [statistics.median(rec[stage][i] for rec in v) * 1000
                   for i in (0, 1)] for k, v in records.items()}
        t, o = med["torchvision"], med["course"]
        print(f"{stage:14} {t[0]:10.1f} {o[0]:10.1f} {o[0] / t[0]:6.2f} "
              f"{t[1]:10.1f} {o[1]:10.1f} {o[1] / t[1]:6.2f}")


if __name__ == "__main__":
    main()
