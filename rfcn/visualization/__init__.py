"""Pictures: boxes drawn on images (detections, ground truth), matplotlib plots (PR curves,
confusion matrix, error breakdown, dataset histograms, training curves), TensorBoard extras.
Headless: matplotlib runs on its Agg backend, OpenCV draws."""

from rfcn.visualization.draw import class_color, draw_detections
from rfcn.visualization.ground_truth import draw_ground_truth, sample_indices
from rfcn.visualization.tensorboard import tensorboard_eval_extras

__all__ = [
    "class_color",
    "draw_detections",
    "draw_ground_truth",
    "sample_indices",
    "tensorboard_eval_extras",
]
