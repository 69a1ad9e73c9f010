"""`benchmark(cfg)`, behind tools/benchmark.py: parameters, FLOPs and inference speed."""

from __future__ import annotations

import os
from typing import Any

import torch

from rfcn import assembly
from rfcn.checkpoint import load_checkpoint
from rfcn.inference.stats import count_flops, count_parameters
from rfcn.inference.timing import measure_throughput
from rfcn.models.inference import inference_copy
from rfcn.utils.process import configure_threads, setup_device


def benchmark(cfg: Any) -> dict[str, Any]:
    """Statistics of `cfg.model` (random weights, `num_classes`) or of `cfg.checkpoint`,
    on one random image of `image_size` (h, w); inference through `inference_copy`, as the
    tools run it."""
    device = setup_device(cfg.device)
    threads = configure_threads(cfg.num_threads, 0)
    torch.manual_seed(0)
    if cfg.checkpoint:
        ckpt = load_checkpoint(os.path.expanduser(cfg.checkpoint))
        model = assembly.restore_model(ckpt, str(cfg.checkpoint))
    else:
        assembly.resolve_without_data(cfg.model, tuple(cfg.image_size))
        model = assembly.build_model(cfg.model, int(cfg.num_classes), load_backbone=False)
    h, w = (int(v) for v in cfg.image_size)
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
    params = count_parameters(model)
    fast = inference_copy(model.to(device))
    flops = count_flops(fast, image.to(device))
    speed = measure_throughput(fast, image, device, int(cfg.runs), int(cfg.warmup))
    im = model.spec.images
    return {"model": model.spec.builder, "num_classes": model.spec.num_classes,
            "image_size": [h, w], "resized_to": {"min_size": im.min_size, "max_size": im.max_size},
            "parameters": params, "flops": flops, "device": str(device), "threads": threads,
            **speed}


def format_benchmark(stats: dict[str, Any]) -> str:
    flops = stats["flops"]
    lines = [
        f"model {stats['model']} ({stats['num_classes']} classes incl. background), input "
        f"{stats['image_size'][0]}x{stats['image_size'][1]} resized by the model to shorter "
        f"side {stats['resized_to']['min_size']} (longer <= {stats['resized_to']['max_size']})",
        f"parameters: {stats['parameters']['total'] / 1e6:.2f} M "
        f"({stats['parameters']['trainable'] / 1e6:.2f} M trainable)",
        f"FLOPs: {flops['total'] / 1e9:.2f} G (2 per multiply-add; torch.utils.flop_counter)",
    ]
    for name, n in sorted(flops["by_module"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:<12} {n / 1e9:8.2f} G  {100 * n / max(flops['total'], 1):5.1f}%")
    lines.append(f"inference on {stats['device']} ({stats['threads']} threads): "
                 f"{stats['images_per_second']:.2f} images/s "
                 f"({1000 * stats['seconds_per_image']:.0f} ms/image, median of "
                 f"{stats['runs']})")
    return "\n".join(lines)
