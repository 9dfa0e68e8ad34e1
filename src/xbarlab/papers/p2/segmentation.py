"""A tiny encoder-decoder for semantic segmentation with BN, and mIoU with the background class.

Model (:class:`TinySegNet`): encoder convs at strides 2 and 4 (BN + ReLU, dilated convs at stride 4 for
context), a decoder that upsamples the stride-4 features ×2 (bilinear), adds the stride-2 skip features,
refines them with a conv (BN + ReLU), predicts class logits with a 1×1 conv at stride 2, and upsamples the
logits ×2 (bilinear) to the input size. Every weight layer is a Conv2d, so all of them map to crossbars
(transposed convolutions would stay digital in :func:`xbarlab.convert`).

Classes: 0 = background, c + 1 = Fashion-MNIST class c (11 for Fashion-MNIST).

Metric (:func:`confusion_matrix`, :func:`miou`): a confusion matrix accumulated over all pixels of the set;
IoU_c = TP / (TP + FP + FN); mIoU = mean over the classes that occur in the ground truth or the predictions
(classes with an empty union are left out), background included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConfusionAccumulator", "TinySegNet", "confusion_matrix", "iou_per_class", "miou"]


def _cbr(c_in: int, c_out: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinySegNet(nn.Module):
    """Encoder-decoder for 1-channel canvases; logits (B, num_classes, H, W) with num_classes incl. background."""

    def __init__(self, num_classes: int = 11, width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        if num_classes < 2 or width < 4:
            raise ValueError(f"num_classes/width: invalid values {num_classes}/{width}; allowed: >= 2 / >= 4")
        self.num_classes = num_classes
        self.kwargs = {"num_classes": num_classes, "width": width, "in_channels": in_channels}
        w = width
        self.enc1 = _cbr(in_channels, w // 2, stride=2)  # H/2
        self.enc2 = nn.Sequential(
            _cbr(w // 2, w, stride=2),  # H/4
            _cbr(w, w, dilation=2),
            _cbr(w, w, dilation=4),
        )
        self.reduce = _cbr(w, w // 2)
        self.dec = _cbr(w // 2, w // 2)
        self.classifier = nn.Conv2d(w // 2, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        s2 = self.enc1(x)
        s4 = self.enc2(s2)
        up = F.interpolate(self.reduce(s4), size=s2.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(self.dec(up + s2))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """(num_classes, num_classes) int64 counts, rows = ground truth, columns = prediction."""
    if pred.shape != target.shape:
        raise ValueError(f"pred/target: shapes differ ({tuple(pred.shape)} vs {tuple(target.shape)})")
    t = target.reshape(-1).to(torch.int64)
    p = pred.reshape(-1).to(torch.int64)
    lo = min(int(t.min()), int(p.min())) if t.numel() else 0
    hi = max(int(t.max()), int(p.max())) if t.numel() else 0
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"pred/target: class indices must be in [0, {num_classes})")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


class ConfusionAccumulator:
    """Confusion counts summed over batches on the device of the predictions; one host read at the end.

    Same counts as summing :func:`confusion_matrix` per batch, without its per-batch range reads: indices outside
    ``[0, num_classes)`` are counted on the device and refused by :meth:`result` (never dropped silently).
    """

    def __init__(self, num_classes: int, device: str | torch.device = "cpu") -> None:
        self.num_classes = int(num_classes)
        # n*n counts, then the number of out-of-range entries, in one tensor: one copy to the host
        self.counts = torch.zeros(self.num_classes**2 + 1, dtype=torch.int64, device=device)

    def add(self, pred: Tensor, target: Tensor) -> None:
        """Count one batch (``pred``, ``target``: class indices of the same shape)."""
        if pred.shape != target.shape:
            raise ValueError(f"pred/target: shapes differ ({tuple(pred.shape)} vs {tuple(target.shape)})")
        n = self.num_classes
        t = target.reshape(-1).to(self.counts.device, torch.int64, non_blocking=True)
        p = pred.reshape(-1).to(self.counts.device, torch.int64)
        ok = (t >= 0) & (t < n) & (p >= 0) & (p < n)
        index = torch.where(ok, t * n + p, n * n)  # out-of-range entries land in the last slot
        self.counts.index_add_(0, index, torch.ones_like(index))

    def result(self) -> Tensor:
        """The (num_classes, num_classes) int64 counts on the CPU (rows = ground truth, columns = prediction)."""
        counts = self.counts.cpu()
        if int(counts[-1]):
            raise ValueError(f"pred/target: class indices must be in [0, {self.num_classes})")
        return counts[:-1].reshape(self.num_classes, self.num_classes)


def iou_per_class(conf: Tensor) -> Tensor:
    """IoU per class from a confusion matrix (float64; NaN where the union is empty)."""
    c = conf.to(torch.float64)
    tp = c.diag()
    union = c.sum(0) + c.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def miou(conf: Tensor) -> float:
    """Mean IoU over the classes with a non-empty union (background included)."""
    iou = iou_per_class(conf)
    valid = ~torch.isnan(iou)
    return float(iou[valid].mean()) if bool(valid.any()) else float("nan")
