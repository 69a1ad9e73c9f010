"""Datasets, transforms and loaders: everything between files on disk and the model."""

from rfcn.data.coco import CocoDetection
from rfcn.data.collate import collate_detection
from rfcn.data.concat import ConcatDetection
from rfcn.data.loader import TrainBatch, build_test_loader, build_train_loader
from rfcn.data.synthetic import ensure_synthetic_dataset
from rfcn.data.voc import VOC_CLASSES, VOCDetection

__all__ = [
    "CocoDetection",
    "ConcatDetection",
    "TrainBatch",
    "VOCDetection",
    "VOC_CLASSES",
    "build_test_loader",
    "build_train_loader",
    "collate_detection",
    "ensure_synthetic_dataset",
]
