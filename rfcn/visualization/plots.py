"""PNG plots of datasets, errors and training runs (matplotlib, Agg, no display needed).

Figures are built with `matplotlib.figure.Figure` on a `FigureCanvasAgg`, never through
pyplot: nothing global changes (no backend switch, no pyplot figure manager, no rcParams),
so these functions are safe inside a user's notebook or a training process. Every PNG is
written atomically (temporary file in the target folder, then ``os.replace``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rfcn.data.statistics import DatasetStatistics
from rfcn.utils.files import atomic_write

__all__ = [
    "plot_confusion_matrix",
    "plot_dataset_histograms",
    "plot_error_breakdown",
    "plot_pr_curves",
    "plot_training_curves",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
# MATLAB analyze() colours of C75, C50, Loc, Sim, Oth, BG, FN.
_BREAKDOWN_COLORS = ((1.0, 1.0, 1.0), (0.9, 0.9, 0.9), (0.31, 0.51, 0.74), (0.75, 0.31, 0.30),
                     (0.36, 0.90, 0.38), (0.50, 0.39, 0.64), (1.0, 0.6, 0.0))


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Figure, path: PathLike, dpi: int = 100) -> None:
    """Write ``fig`` as PNG to ``path`` atomically (parent folders created)."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    logger.debug("wrote %s", path)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: PathLike, normalize: bool = True
) -> None:
    """Heat map of a `confusion_matrix` (``matrix[predicted, true]``, index 0 background):
    predicted class on the y axis, true class on the x axis; with ``normalize`` each column
    (true class) sums to 1, as ultralytics plots it. ``class_names``: C or C+1 names (the
    background's name is replaced by "background"). Counts are written in the cells up to 30
    classes."""
    matrix = np.asarray(matrix, dtype=np.float64)
    size = matrix.shape[0]
    names = list(class_names)[-(size - 1):] if size > 1 else []
    names = ["background", *names]
    with np.errstate(divide="ignore", invalid="ignore"):
        shown = matrix / matrix.sum(axis=0, keepdims=True) if normalize else matrix
    shown = np.nan_to_num(shown)
    side = min(4.0 + 0.35 * size, 30.0)
    fig = _figure(side + 1.5, side)
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(im, ax=ax, shrink=0.8)
    if size <= 100:
        ticks = np.arange(size)
        ax.set_xticks(ticks, names, rotation=90, fontsize=8)
        ax.set_yticks(ticks, names, fontsize=8)
    if size <= 31:
        for (r, c), v in np.ndenumerate(matrix):
            if v:
                ax.text(c, r, f"{int(v)}", ha="center", va="center", fontsize=7,
                        color="white" if shown[r, c] > 0.6 * (shown.max() or 1) else "black")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title("confusion matrix" + (" (columns normalised)" if normalize else ""))
    _save_png(fig, path)


def _envelope_at(recall: np.ndarray, precision: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Interpolated precision (max precision at recall >= r) on ``grid``; 0 beyond the
    curve's largest recall."""
    out = np.zeros_like(grid)
    if recall.size == 0:
        return out
    order = np.argsort(recall, kind="mergesort")
    rec, prec = recall[order], precision[order]
    envelope = np.maximum.accumulate(prec[::-1])[::-1]
    idx = np.searchsorted(rec, grid, side="left")
    inside = idx < rec.size
    out[inside] = envelope[idx[inside]]
    return out


def plot_pr_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: PathLike,
    title: str = "precision-recall",
) -> None:
    """Per-class PR curves (``{class: (recall, precision)}``, as ``CocoEvaluator.pr_curves``
    / ``VOCEvaluator.pr_curves``) and their mean interpolated curve in bold; a legend up to
    20 classes."""
    fig = _figure(7.0, 5.5)
    ax = fig.add_subplot()
    grid = np.linspace(0.0, 1.0, 101)
    envelopes = []
    many = len(curves) > 20
    for name, (recall, precision) in curves.items():
        recall = np.asarray(recall, dtype=np.float64).reshape(-1)
        precision = np.asarray(precision, dtype=np.float64).reshape(-1)
        ax.plot(recall, precision, linewidth=0.8 if many else 1.2,
                color="gray" if many else None, alpha=0.5 if many else 1.0,
                label=None if many else name)
        envelopes.append(_envelope_at(recall, precision, grid))
    if envelopes:
        mean = np.mean(envelopes, axis=0)
        ax.plot(grid, mean, color="black", linewidth=2.5,
                label=f"mean ({len(envelopes)} classes, AP {mean.mean():.3f})")
        ax.legend(loc="lower left", fontsize=7)
    else:
        _empty(ax, "no curves")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
    ax.grid(alpha=0.3)
    _save_png(fig, path)


def _bar_hist(ax: Any, edges: Sequence[float], counts: Sequence[int], log_x: bool) -> None:
    edges = np.asarray(edges, dtype=np.float64)
    ax.stairs(np.asarray(counts, dtype=np.float64), edges, fill=True, alpha=0.7)
    if log_x:
        ax.set_xscale("log", base=2)


def plot_dataset_histograms(stats: DatasetStatistics, path: PathLike) -> None:
    """Four panels over the fixed bins of `DatasetStatistics.to_dict`: box side in pixels
    (sqrt(area), log scale), size relative to the image, log2 aspect ratio h/w, and boxes
    per class (the 40 most frequent)."""
    summary = stats.to_dict()
    hist = summary["histograms"]
    fig = _figure(12.0, 9.0)
    axes = fig.subplots(2, 2)
    side, rel, asp = hist["box_side_px"], hist["box_rel_size"], hist["log2_aspect_ratio"]
    _bar_hist(axes[0, 0], side["edges"], side["sqrt_area"], log_x=True)
    axes[0, 0].set(title="box sqrt(area)", xlabel="pixels", ylabel="boxes")
    _bar_hist(axes[0, 1], rel["edges"], rel["sqrt_area"], log_x=False)
    axes[0, 1].set(title="box size / image size", xlabel="sqrt(area / image area)")
    _bar_hist(axes[1, 0], asp["edges"], asp["counts"], log_x=False)
    axes[1, 0].set(title="aspect ratio", xlabel="log2(h / w)", ylabel="boxes")
    per_class = sorted(summary["boxes_per_class"].items(), key=lambda kv: -kv[1])[:40]
    ax = axes[1, 1]
    if per_class:
        names = [n for n, _ in per_class][::-1]
        ax.barh(np.arange(len(names)), [n for _, n in per_class][::-1])
        ax.set_yticks(np.arange(len(names)), names, fontsize=9 if len(names) <= 20 else 7)
    else:
        _empty(ax, "no classes")
    ax.set(title="boxes per class", xlabel="boxes")
    if stats.num_boxes == 0:
        for a in (axes[0, 0], axes[0, 1], axes[1, 0]):
            _empty(a, "no boxes")
    fig.suptitle(f"{stats.num_images} images, {stats.num_boxes} boxes")
    _save_png(fig, path)


def _group_tags(history: Mapping[str, Sequence[tuple[float, float]]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {"losses": [], "learning rate": [], "evaluation": []}
    for tag in sorted(history):
        leaf = tag.rsplit("/", 1)[-1]
        if tag.startswith("eval/"):
            groups["evaluation"].append(tag)
        elif leaf == "lr" or leaf.startswith("lr"):
            groups["learning rate"].append(tag)
        elif "loss" in leaf:
            groups["losses"].append(tag)
        else:
            logger.debug("training curves: tag %s fits no panel", tag)
    return groups


def plot_training_curves(
    history: Mapping[str, Sequence[tuple[float, float]]], path: PathLike
) -> None:
    """Three panels of scalars over iterations: losses (tags with "loss", e.g. train/loss,
    train/loss_classifier), learning rate (tags ending in "lr"), evaluation metrics (tags
    under eval/, e.g. eval/AP). ``history``: tag -> [(iteration, value), ...], the scalars a
    trainer sends to TensorBoard; missing or empty groups give an empty panel."""
    groups = _group_tags(history)
    fig = _figure(14.0, 4.5)
    axes = fig.subplots(1, 3)
    for ax, (title, tags) in zip(axes, groups.items(), strict=True):
        plotted = 0
        for tag in tags:
            points = np.asarray(history[tag], dtype=np.float64).reshape(-1, 2)
            if points.size == 0:
                continue
            points = points[np.argsort(points[:, 0], kind="mergesort")]
            ax.plot(points[:, 0], points[:, 1], marker="o" if len(points) < 20 else None,
                    markersize=3, linewidth=1.2, label=tag)
            plotted += 1
        if plotted:
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        else:
            _empty(ax, "no data")
        ax.set(title=title, xlabel="iteration")
    _save_png(fig, path)


def plot_error_breakdown(
    breakdown: Mapping[str, Any], path: PathLike, class_name: str | None = None,
    area: str = "all",
) -> None:
    """The MATLAB analyze() area plot of a `coco_error_breakdown` result: stacked PR curves
    C75 .. FN with their APs in the legend, overall (``class_name`` None, at ``area``) or
    for one class (area all)."""
    curves = (breakdown["curves"]["overall"][area] if class_name is None
              else breakdown["curves"]["per_class"][class_name])
    aps = (breakdown["overall"][area] if class_name is None
           else breakdown["per_class"][class_name]["all"])
    recall = np.asarray(breakdown["recall"], dtype=np.float64)
    fig = _figure(7.0, 5.5)
    ax = fig.add_subplot()
    lower = np.zeros_like(recall)
    drawn = False
    for name, color in zip(breakdown["error_types"], _BREAKDOWN_COLORS, strict=True):
        if curves.get(name) is None:
            continue
        upper = np.maximum(np.asarray(curves[name], dtype=np.float64), lower)
        ap = aps.get(name)
        ax.fill_between(recall, lower, upper, color=color, edgecolor="black", linewidth=0.5,
                        label=f"[{ap:.3f}] {name}" if ap is not None else name)
        lower, drawn = upper, True
    if drawn:
        ax.legend(loc="lower left", fontsize=8)
    else:
        _empty(ax, "no ground truth")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="recall", ylabel="precision",
           title=f"{class_name or 'overall'} - {area if class_name is None else 'all'}")
    _save_png(fig, path)
