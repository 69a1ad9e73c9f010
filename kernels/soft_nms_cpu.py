"""Soft-NMS (Bodla et al., ICCV 2017) as a Numba CPU kernel (no torch here).

Per class, repeatedly take the highest-scoring remaining box and decay the scores of the
others by their overlap with it: linear, ``s *= 1 - IoU`` when ``IoU > iou_thresh``;
gaussian, ``s *= exp(-IoU**2 / sigma)`` for every box. A box whose score falls below
``min_score`` is removed. IoU of continuous-pixel boxes (no +1 on widths: rfcn's boxes are
continuous, where the authors' Caffe-era code counted inclusive pixels).

Shape shorthand: P candidate boxes (all classes of one image), float64 throughout.
"""

from __future__ import annotations

import numpy as np
from numba import njit

LINEAR, GAUSSIAN = 1, 2


@njit(cache=True)
def _iou(b, i, j):
    iw = min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0])
    ih = min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1])
    if iw <= 0.0 or ih <= 0.0:
        return 0.0
    inter = iw * ih
    union = (b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1]) + (b[j, 2] - b[j, 0]) * (
        b[j, 3] - b[j, 1]) - inter
    return inter / union if union > 0.0 else 0.0


@njit(cache=True)
def _soft_nms_segment(boxes, s, idx, method, iou_thresh, sigma, min_score, keep, kept, q):
    """Soft-NMS over the boxes `idx` (one class); appends to keep / kept from q."""
    m = idx.shape[0]
    alive = np.empty(m, np.bool_)
    for a in range(m):
        alive[a] = s[idx[a]] >= min_score
    while True:
        best, best_s = -1, -1.0
        for a in range(m):  # the highest remaining score (the first on ties)
            if alive[a] and s[idx[a]] > best_s:
                best, best_s = a, s[idx[a]]
        if best < 0:
            return q
        alive[best] = False
        keep[q], kept[q] = idx[best], best_s
        q += 1
        for a in range(m):
            if not alive[a]:
                continue
            j = idx[a]
            iou = _iou(boxes, idx[best], j)
            if method == LINEAR:
                if iou > iou_thresh:
                    s[j] *= 1.0 - iou
            else:
                s[j] *= np.exp(-(iou * iou) / sigma)
            if s[j] < min_score:
                alive[a] = False


@njit(cache=True)
def soft_nms(boxes, scores, classes, method, iou_thresh, sigma, min_score):
    """boxes float64[P, 4] xyxy, scores float64[P], classes int64[P]; method LINEAR or
    GAUSSIAN -> (kept indices int64[Q] in order of selection within each class, classes in
    ascending order; their decayed scores float64[Q])."""
    n = boxes.shape[0]
    s = scores.copy()
    keep = np.empty(n, np.int64)
    kept = np.empty(n, np.float64)
    order = np.argsort(classes, kind="mergesort")
    q, start = 0, 0
    while start < n:
        end = start
        while end < n and classes[order[end]] == classes[order[start]]:
            end += 1
        q = _soft_nms_segment(boxes, s, order[start:end], method, iou_thresh, sigma,
                              min_score, keep, kept, q)
        start = end
    return keep[:q], kept[:q]
