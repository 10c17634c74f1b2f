"""Face-box arithmetic in torch: pairwise overlap, greedy non-maximum suppression, squaring.

Boxes are ``(..., 4)`` tensors ``(x0, y0, x1, y1)`` of *corners* in face3dkit pixel coordinates
(docs/conventions.md): a box covering pixel columns 10..19 has ``x0 = 10, x1 = 20`` and width
``x1 - x0``. Every function works on any device and float dtype.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["box_area", "box_overlap", "nms", "batched_nms", "square_boxes"]

Overlap = Literal["iou", "min"]


def box_area(boxes: Tensor) -> Tensor:
    """(..., 4) boxes → (...) areas in square pixels (0 for empty boxes)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_overlap(a: Tensor, b: Tensor, mode: Overlap = "iou") -> Tensor:
    """Pairwise overlap of (N, 4) and (M, 4) boxes → (N, M).

    ``'iou'``: intersection / union. ``'min'``: intersection / the smaller of the two areas (1 when
    one box contains the other; MTCNN's last-stage criterion). Empty boxes overlap nothing (0).
    """
    lo = torch.maximum(a[:, None, :2], b[None, :, :2])
    hi = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(-1)
    area_a, area_b = box_area(a)[:, None], box_area(b)[None, :]
    if mode == "iou":
        denom = area_a + area_b - inter
    elif mode == "min":
        denom = torch.minimum(area_a, area_b)
    else:
        raise ValueError(f"overlap mode must be 'iou' or 'min', got {mode!r}")
    return torch.where(denom > 0, inter / denom.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def nms(boxes: Tensor, scores: Tensor, threshold: float, mode: Overlap = "iou") -> Tensor:
    """Greedy non-maximum suppression: indices of the boxes kept, best score first.

    The best-scoring box is kept and every remaining box overlapping it by more than ``threshold``
    (:func:`box_overlap` ``mode``) is dropped; repeated on what is left. Ties in score keep the
    lower index first.

    Args:
        boxes: (N, 4) corners.
        scores: (N,) higher is better.
        threshold: overlap above which a box is suppressed (boxes at exactly ``threshold`` stay).
        mode: ``'iou'`` or ``'min'``.

    Returns:
        (K,) int64 indices into ``boxes`` on the boxes' device, in decreasing score.
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms expects (N, 4) boxes and (N,) scores, got {tuple(boxes.shape)} "
                         f"and {tuple(scores.shape)}")
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    keep: list[Tensor] = []
    rest = torch.arange(n, device=boxes.device)
    while rest.numel() > 0:
        i = rest[0]
        keep.append(i)
        if rest.numel() == 1:
            break
        ov = box_overlap(b[i][None], b[rest[1:]], mode)[0]
        rest = rest[1:][ov <= threshold]
    return order[torch.stack(keep)]


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, threshold: float, mode: Overlap = "iou") -> Tensor:
    """:func:`nms` run independently within each group (e.g. image of a batch, pyramid scale).

    Boxes of different groups never suppress each other: each group is shifted by more than the
    extent of all boxes before the suppression.

    Returns:
        (K,) int64 indices kept, in decreasing score over all groups.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    span = (boxes.max() - boxes.min()).abs() + 1
    shifted = boxes - boxes.min() + (groups.to(boxes.dtype) * span * 2)[:, None]
    return nms(shifted, scores, threshold, mode)


def square_boxes(boxes: Tensor) -> Tensor:
    """(..., 4) boxes → squares with the same centres and side = the longer side."""
    c = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = (boxes[..., 2:] - boxes[..., :2]).max(-1, keepdim=True).values / 2
    return torch.cat([c - half, c + half], dim=-1)
