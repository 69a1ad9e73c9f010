"""Inference: predicting images and folders (boxes drawn, detections.json), exported files
opened as detectors (onnxruntime, torch.export), runtimes built for comparison (eager,
torch.compile, onnxruntime, int8) and the one timing loop the benchmarks and tools share.

    from rfcn.inference import load_exported, predict_images
    detector = load_exported("model.onnx", "onnxruntime", torch.device("cpu"))
"""

from rfcn.inference.exported import ExportedDetector, load_exported
from rfcn.inference.predict import predict_images
from rfcn.inference.runtimes import RUNTIMES, Runtime, build_all, build_runtime
from rfcn.inference.stats import count_flops, count_parameters
from rfcn.inference.timing import StageTimer, interleaved, measure_throughput

__all__ = [
    "RUNTIMES",
    "ExportedDetector",
    "Runtime",
    "StageTimer",
    "build_all",
    "build_runtime",
    "count_flops",
    "count_parameters",
    "interleaved",
    "load_exported",
    "measure_throughput",
    "predict_images",
]
