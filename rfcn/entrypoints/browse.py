"""`browse(cfg)`, behind tools/browse.py: a dataset split's statistics and drawn ground
truth."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rfcn import build
from rfcn import config as rc
from rfcn.data.statistics import dataset_statistics, format_statistics
from rfcn.engine.browse import draw_ground_truth, sample_indices
from rfcn.engine.json_files import write_json
from rfcn.engine.plots import plot_dataset_histograms


def browse(cfg: Any) -> str:
    """Writes `output/statistics.{json,txt}`, `output/histograms.png` and `output/images/`;
    returns the statistics as text."""
    out = Path(os.path.expanduser(cfg.output))
    out.mkdir(parents=True, exist_ok=True)
    split = rc.plain(cfg.split)
    if split == "val":
        dataset = build.build_eval_dataset(cfg.dataset)
    else:
        dataset = build.build_datasets(cfg.dataset)[0]
    stats = dataset_statistics(dataset)
    dropped = dict(getattr(dataset, "bad_records", {}))
    text = f"{cfg.dataset.name} {split}: {dataset!r}\n" + format_statistics(stats, dropped)
    write_json(out / "statistics.json", {**stats.to_dict(), "dropped_records": dropped})
    (out / "statistics.txt").write_text(text + "\n")
    plot_dataset_histograms(stats, out / "histograms.png")
    transforms = None
    if cfg.transforms:
        build.apply_auto_sizing(cfg, dataset)
        spec = build.config_spec(cfg.model, len(dataset.class_names))
        transforms = build.build_train_transforms(cfg.aug, spec)
    indices = sample_indices(len(dataset), int(cfg.n), int(cfg.seed))
    draw_ground_truth(dataset, indices, out / "images", transforms, int(cfg.seed))
    return text
