"""`browse(cfg)`, behind tools/browse.py: a dataset split's statistics and drawn ground
truth."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from rfcn import assembly
from rfcn import config as rc
from rfcn.data.image_check import ImageProblem, check_images
from rfcn.data.statistics import dataset_statistics, format_statistics
from rfcn.utils.files import write_json
from rfcn.utils.process import configure_threads
from rfcn.visualization.ground_truth import draw_ground_truth, sample_indices
from rfcn.visualization.plots import plot_dataset_histograms


def browse(cfg: Any) -> str:
    """Writes `output/statistics.{json,txt}`, `output/histograms.png` and `output/images/`;
    returns the statistics (and the images that cannot be used) as text."""
    out = Path(os.path.expanduser(cfg.output))
    out.mkdir(parents=True, exist_ok=True)
    configure_threads(cfg.num_threads, 0)
    split = rc.plain(cfg.split)
    if split == "val":
        dataset = assembly.build_eval_dataset(cfg.dataset)
    else:
        dataset = assembly.build_datasets(cfg.dataset)[0]
    stats = dataset_statistics(dataset)
    dropped = dict(getattr(dataset, "bad_records", {}))
    text = f"{cfg.dataset.name} {split}: {dataset!r}\n" + format_statistics(stats, dropped)
    problems = _checked_images(dataset, bool(cfg.check_images))
    if problems is not None:
        text += "\n\n" + format_problems(problems, len(dataset), bool(cfg.dataset.strict))
    write_json(out / "statistics.json", {
        **stats.to_dict(), "dropped_records": dropped,
        "unreadable_images": [{"path": p.path, "kind": p.kind, "problem": p.problem}
                              for p in problems or []]})
    (out / "statistics.txt").write_text(text + "\n")
    plot_dataset_histograms(stats, out / "histograms.png")
    transforms = None
    if cfg.transforms:
        assembly.apply_auto_sizing(cfg, dataset)
        spec = assembly.config_spec(cfg.model, len(dataset.class_names))
        transforms = assembly.build_train_transforms(cfg.aug, spec)
    indices = sample_indices(len(dataset), int(cfg.n), int(cfg.seed))
    bad = {p.path for p in problems or [] if p.kind != "size_mismatch"}
    indices = [i for i in indices if dataset.image_path(i) not in bad]
    draw_ground_truth(dataset, indices, out / "images", transforms, int(cfg.seed))
    return text


def _checked_images(dataset: Any, check: bool) -> list[ImageProblem] | None:
    """Every image of the split decoded once (None: `check_images=false`)."""
    if not check:
        return None
    paths = [dataset.image_path(i) for i in range(len(dataset))]
    sizes = [tuple(int(v) for v in dataset.get_annotation(i)["orig_size"])
             for i in range(len(dataset))]
    return check_images(paths, sizes, num_workers=torch.get_num_threads())


def format_problems(problems: list[ImageProblem], total: int, strict: bool,
                    show: int = 10) -> str:
    """What browse found, and what training will do with it."""
    if not problems:
        return f"images: all {total} decode at their annotated size"
    fatal = [p for p in problems if p.kind != "size_mismatch"]
    what = ("training stops on the first (dataset.strict=true)" if strict else
            "training skips them (dataset.strict=true would stop instead)")
    lines = [f"images: {len(problems)} of {total} cannot be used as annotated"
             + (f"; {len(fatal)} unreadable: {what}" if fatal else "")]
    lines += [f"  {p}" for p in problems[:show]]
    if len(problems) > show:
        lines.append(f"  ... and {len(problems) - show} more (statistics.json)")
    if len(fatal) < len(problems):
        lines.append("  size mismatches: the boxes are read against the annotated size; "
                     "re-export, or convert again (convert uses the decoded size)")
    return "\n".join(lines)
