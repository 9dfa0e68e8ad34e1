"""A tiny single-stage, anchor-free (CenterNet-style) detector with BN, its decoding and VOC mAP@0.5.

Model (:class:`TinyCenterNet`): a stride-4 fully convolutional backbone (every conv followed by BN and ReLU,
dilated convolutions for a receptive field that covers the largest objects) and one 1×1 output conv giving,
per output cell, C class heat-map logits, the box size (w, h) and the sub-cell offset of the centre (both in
output cells). Zhou et al., "Objects as Points" (2019): object i is the peak of its class heat map at the
cell holding its centre; training targets are Gaussians around the centres (radius from the box size).

Loss (:func:`detection_loss`): CenterNet's penalty-reduced focal loss on the heat maps (α = 2, β = 4) plus
L1 on size (weight 0.1) and offset (weight 1) at the centre cells, averaged over objects.

Decoding (:func:`decode`): sigmoid heat maps, 3×3 max-pool peak extraction, the top ``k`` peaks over all
classes with score ≥ ``score_threshold``, then class-wise NMS at IoU ``nms_iou`` (pure torch).

Metric (:func:`mean_average_precision`): PASCAL VOC 2010+ average precision with all-point interpolation at
IoU ≥ 0.5, per class over the whole set, then averaged over the classes that have ground truth. Boxes are
``[x0, y0, x1, y1)`` in continuous pixel coordinates (area = (x1 − x0)·(y1 − y0), no +1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Detections",
    "TinyCenterNet",
    "average_precision",
    "box_iou",
    "decode",
    "detection_loss",
    "encode_targets",
    "gaussian_radius",
    "mean_average_precision",
    "nms",
]

STRIDE = 4
"""Output stride of the detector (input pixels per output cell)."""


def _cbr(c_in: int, c_out: int, *, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class TinyCenterNet(nn.Module):
    """Stride-4 CenterNet-style detector for 1-channel canvases; output (B, num_classes + 4, H/4, W/4)."""

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        if num_classes < 1 or width < 4:
            raise ValueError(f"num_classes/width: invalid values {num_classes}/{width}; allowed: >= 1 / >= 4")
        self.num_classes = num_classes
        self.kwargs = {"num_classes": num_classes, "width": width, "in_channels": in_channels}
        w = width
        self.features = nn.Sequential(
            *_cbr(in_channels, w // 2, stride=2),
            *_cbr(w // 2, w, stride=2),
            *_cbr(w, w),
            *_cbr(w, w, dilation=2),
            *_cbr(w, w, dilation=4),
            *_cbr(w, w),
        )
        self.head = nn.Conv2d(w, num_classes + 4, 1)
        with torch.no_grad():  # CenterNet's prior: initial heat-map probability 0.1
            assert self.head.bias is not None
            self.head.bias[:num_classes].fill_(-math.log((1 - 0.1) / 0.1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


# ------------------------------------------------------------------------------------------------ targets / loss


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's Gaussian radius (cells) for a box so that a shifted box keeps IoU ≥ ``min_overlap``."""
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


@dataclass(frozen=True)
class Targets:
    """Dense training targets of a batch."""

    heat: Tensor
    """(B, C, h, w) Gaussian heat maps in [0, 1] (exactly 1 at the centre cells)."""
    index: Tensor
    """(B, M) flat centre-cell index of each object (0 for padding)."""
    size: Tensor
    """(B, M, 2) box (w, h) in output cells."""
    offset: Tensor
    """(B, M, 2) sub-cell offset of the centre."""
    valid: Tensor
    """(B, M) bool, False for padding."""


def encode_targets(boxes: Tensor, labels: Tensor, num_classes: int, out_size: tuple[int, int]) -> Targets:
    """Targets for padded ``boxes`` (B, M, 4) in pixels and ``labels`` (B, M) (−1 = padding)."""
    b, m = labels.shape
    oh, ow = out_size
    heat = torch.zeros(b, num_classes, oh, ow)
    index = torch.zeros(b, m, dtype=torch.int64)
    size = torch.zeros(b, m, 2)
    offset = torch.zeros(b, m, 2)
    valid = labels >= 0
    ys = torch.arange(oh, dtype=torch.float32).view(-1, 1)
    xs = torch.arange(ow, dtype=torch.float32).view(1, -1)
    for i in range(b):
        for j in range(m):
            if not bool(valid[i, j]):
                continue
            x0, y0, x1, y1 = (float(v) / STRIDE for v in boxes[i, j])
            w, h = x1 - x0, y1 - y0
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            px, py = min(int(cx), ow - 1), min(int(cy), oh - 1)
            r = max(0.0, float(int(gaussian_radius(h, w))))
            sigma = (2 * r + 1) / 6
            g = torch.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * sigma * sigma))
            c = int(labels[i, j])
            heat[i, c] = torch.maximum(heat[i, c], g)
            index[i, j] = py * ow + px
            size[i, j] = torch.tensor([w, h])
            offset[i, j] = torch.tensor([cx - px, cy - py])
    return Targets(heat, index, size, offset, valid)


def detection_loss(output: Tensor, targets: Targets, *, size_weight: float = 0.1) -> Tensor:
    """Focal heat-map loss + ``size_weight``·L1(size) + L1(offset), normalised by the number of objects."""
    c = targets.heat.shape[1]
    logits = output[:, :c]
    pred = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    gt = targets.heat.to(output.device)
    pos = gt.eq(1).float()
    neg_w = (1 - gt).pow(4)
    pos_loss = (torch.log(pred) * (1 - pred).pow(2) * pos).sum()
    neg_loss = (torch.log(1 - pred) * pred.pow(2) * neg_w * (1 - pos)).sum()
    n = targets.valid.sum().clamp_min(1).to(output.dtype)
    focal = -(pos_loss + neg_loss) / n
    b = output.shape[0]
    reg = output[:, c:].reshape(b, 4, -1)  # (B, 4, h·w)
    idx = targets.index.to(output.device).unsqueeze(1).expand(-1, 4, -1)
    at = reg.gather(2, idx).transpose(1, 2)  # (B, M, 4)
    mask = targets.valid.to(output.device).unsqueeze(-1).to(output.dtype)
    size_l1 = (F.l1_loss(at[..., :2], targets.size.to(output.device), reduction="none") * mask).sum() / n
    off_l1 = (F.l1_loss(at[..., 2:], targets.offset.to(output.device), reduction="none") * mask).sum() / n
    return focal + size_weight * size_l1 + off_l1


# ------------------------------------------------------------------------------------------------ decoding


@dataclass(frozen=True)
class Detections:
    """Detections of one image: boxes (n, 4) in pixels, scores (n,), labels (n,)."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of boxes ``a`` (n, 4) and ``b`` (m, 4), ``[x0, y0, x1, y1)``; returns (n, m)."""
    area_a = (a[:, 2] - a[:, 0]).clamp_min(0) * (a[:, 3] - a[:, 1]).clamp_min(0)
    area_b = (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression; returns the kept indices in decreasing score order."""
    order = scores.argsort(descending=True, stable=True)
    keep: list[int] = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    iou = box_iou(boxes[order], boxes[order])
    for i in range(len(order)):
        if bool(suppressed[i]):
            continue
        keep.append(int(order[i]))
        suppressed |= iou[i] > iou_threshold
    return torch.tensor(keep, dtype=torch.int64)


@torch.no_grad()
def decode(
    output: Tensor,
    num_classes: int,
    *,
    k: int = 20,
    score_threshold: float = 0.05,
    nms_iou: float = 0.5,
) -> list[Detections]:
    """Detector output (B, C + 4, h, w) → one :class:`Detections` per image (boxes in input pixels)."""
    b, _, oh, ow = output.shape
    heat = torch.sigmoid(output[:, :num_classes].float())
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    reg = output[:, num_classes:].float()
    results = []
    for i in range(b):
        scores, flat = peaks[i].reshape(-1).topk(min(k, peaks[i].numel()))
        keep = scores >= score_threshold
        scores, flat = scores[keep], flat[keep]
        labels = flat // (oh * ow)
        cell = flat % (oh * ow)
        py, px = (cell // ow).float(), (cell % ow).float()
        r = reg[i].reshape(4, -1)[:, cell]
        w, h = r[0].clamp_min(0), r[1].clamp_min(0)
        cx, cy = px + r[2], py + r[3]
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1) * STRIDE
        kept: list[Tensor] = []
        for c in labels.unique():
            sel = torch.nonzero(labels == c).flatten()
            kept.append(sel[nms(boxes[sel], scores[sel], nms_iou)])
        idx = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.int64)
        idx = idx[scores[idx].argsort(descending=True, stable=True)]
        results.append(Detections(boxes[idx], scores[idx], labels[idx]))
    return results


# ------------------------------------------------------------------------------------------------ mAP


def average_precision(recall: Tensor, precision: Tensor) -> float:
    """VOC all-point interpolated AP: area under the precision envelope max_{r' ≥ r} p(r') over recall."""
    mrec = torch.cat([torch.zeros(1, dtype=torch.float64), recall.double(), torch.ones(1, dtype=torch.float64)])
    mpre = torch.cat([torch.zeros(1, dtype=torch.float64), precision.double(), torch.zeros(1, dtype=torch.float64)])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = torch.maximum(mpre[i], mpre[i + 1])
    change = torch.nonzero(mrec[1:] != mrec[:-1]).flatten()
    return float(((mrec[change + 1] - mrec[change]) * mpre[change + 1]).sum())


def mean_average_precision(
    detections: Sequence[Detections],
    ground_truth: Sequence[tuple[Tensor, Tensor]],
    num_classes: int,
    *,
    iou_threshold: float = 0.5,
) -> tuple[float, list[float | None]]:
    """VOC-style mAP@``iou_threshold`` over a set of images.

    Args:
        detections: per image, boxes/scores/labels (any order).
        ground_truth: per image, (boxes (n, 4), labels (n,)).
        num_classes: classes 0 … C − 1.

    Per class, all detections of the set are sorted by decreasing score (ties: image order, then input order);
    each is a true positive when its best-IoU ground-truth box of the same class in its image has IoU ≥ the
    threshold and was not matched by a higher-scored detection, otherwise a false positive (duplicates are
    false positives). AP per :func:`average_precision`. Returns (mAP over classes with ground truth, AP per
    class with ``None`` for classes without ground truth). With no ground truth at all the mAP is NaN.
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"detections/ground_truth: lengths differ ({len(detections)} vs {len(ground_truth)})")
    aps: list[float | None] = []
    for c in range(num_classes):
        gts = [(g[0][g[1] == c]) for g in ground_truth]
        npos = sum(int(g.shape[0]) for g in gts)
        entries: list[tuple[float, int, int]] = []  # (−score, image, detection index)
        for im, d in enumerate(detections):
            sel = torch.nonzero(d.labels == c).flatten().tolist()
            entries += [(-float(d.scores[j]), im, j) for j in sel]
        if npos == 0:
            aps.append(None)
            continue
        entries.sort()
        matched = [torch.zeros(int(g.shape[0]), dtype=torch.bool) for g in gts]
        tp = torch.zeros(len(entries), dtype=torch.float64)
        for n, (_, im, j) in enumerate(entries):
            g = gts[im]
            if g.shape[0] == 0:
                continue
            ious = box_iou(detections[im].boxes[j : j + 1].double(), g.double())[0]
            best = int(ious.argmax())
            if float(ious[best]) >= iou_threshold and not bool(matched[im][best]):
                matched[im][best] = True
                tp[n] = 1.0
        ctp = tp.cumsum(0)
        cfp = (1 - tp).cumsum(0)
        recall = ctp / npos
        precision = ctp / (ctp + cfp).clamp_min(1e-12)
        aps.append(average_precision(recall, precision))
    valid = [a for a in aps if a is not None]
    return (sum(valid) / len(valid) if valid else float("nan")), aps
