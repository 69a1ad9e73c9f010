"""The data pipeline at COCO size: index construction, memory, loader throughput (issue 21).

    python scripts/bench_data.py                      # COCO train2017 size, a few minutes
    python scripts/bench_data.py --images 29572 --annotations 215000   # 1/4 size
    python scripts/bench_data.py --ann-file A.json --img-dir DIR       # your own data
    python scripts/bench_data.py --quick              # tiny smoke run

Without --ann-file, a COCO-size annotation file is generated into a temporary directory
(rfcn.data.synthetic_coco: polygons, 1% crowd RLE, images as symlinks to 50 real JPEGs, so
disk reads are not measured). Each measurement runs in a fresh process
(rfcn.data.pipeline_benchmark); printed:
- the index: seconds and retained memory (RSS / PSS) of pycocotools.COCO(ann_file) alone,
  CocoDetection cold (parse + write the cache) and warm (from the cache), and the lazily
  built evaluation index dataset.coco;
- copy-on-write: the Private_Dirty growth of one loader worker reading every image's
  annotations once (one epoch without decoding), and after a gc.collect() in it;
- the loader: images/s with --workers workers and with none, the whole process tree's PSS
  (main + workers) while iterating, the bytes of one image handed over by a worker; and the
  floor: bare cv2.imread + resize in one process, measured in the same run;
- evaluation (rfcn.evaluation.benchmark): --eval-dets detections on each image of a generated
  --eval-images split, scored by raw pycocotools and by rfcn's evaluator (seconds, peak RSS,
  the largest difference of the 12 COCOeval stats);
- end to end (rfcn.data.startup_benchmark): `tools/train.py dataset=coco` on the generated
  train file and that split, --train-workers workers, --train-iters iterations, cache cold
  then warm: seconds to the first iteration against pycocotools' parse of the same file, and
  the whole process tree's peak PSS.
`--sections` picks some of index,cow,loader,eval,train.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from rfcn.data import pipeline_benchmark as pb
from rfcn.data.startup_benchmark import train_end_to_end, write_coco_root
from rfcn.data.synthetic_coco import write_coco_size_annotations
from rfcn.evaluation import benchmark as eb
from rfcn.inference.bench_report import environment, fmt_s, table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ann-file", help="a COCO-format JSON (default: generate one)")
    p.add_argument("--img-dir", help="its image directory (with --ann-file)")
    p.add_argument("--images", type=int, default=118_287)
    p.add_argument("--annotations", type=int, default=860_001)
    p.add_argument("--workers", type=int, default=2, help="loader worker processes")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--batches", type=int, default=300,
                   help="timed loader batches (after a warm-up batch per worker)")
    p.add_argument("--min-size", type=int, default=800)
    p.add_argument("--max-size", type=int, default=1333)
    p.add_argument("--eval-images", type=int, default=5000, help="evaluation split size")
    p.add_argument("--eval-annotations", type=int, default=36_781)
    p.add_argument("--eval-dets", type=int, default=100, help="detections per image")
    p.add_argument("--train-workers", type=int, default=4)
    p.add_argument("--train-iters", type=int, default=20)
    p.add_argument("--sections", default="index,cow,loader,eval,train")
    p.add_argument("--work-dir", help="where to generate (default: a temporary directory)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (numbers meaningless)")
    args = p.parse_args(argv)
    if bool(args.ann_file) != bool(args.img_dir):
        p.error("--ann-file and --img-dir go together")
    args.sections = [x for x in args.sections.split(",") if x]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"--sections: unknown {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    if args.quick:
        args.images, args.annotations = 300, 2200
        args.workers, args.batches, args.min_size, args.max_size = 1, 3, 200, 333
        args.eval_images, args.eval_annotations, args.eval_dets = 40, 300, 20
        args.train_workers, args.train_iters = 1, 2
    return args


SECTIONS = ("index", "cow", "loader", "eval", "train")
REPO = Path(__file__).resolve().parents[1]


def mib(n: float) -> str:
    if abs(n) >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB" if abs(n) < 10 * 2**20 else f"{n / 2**20:,.0f} MiB"


def index_section(img_dir: str, ann_file: str, cache_dir: str, start: str) -> str:
    names = {"pycocotools": "pycocotools.COCO(ann_file) alone",
             "cold": "CocoDetection, cold (parse + write cache)",
             "warm": "CocoDetection, warm (index from cache)",
             "eval_index": "dataset.coco (evaluation index, on first use)"}
    rows = []
    for kind in pb.CONSTRUCTIONS:
        if kind == "cold":
            shutil.rmtree(cache_dir, ignore_errors=True)
        r = pb.run_isolated(pb.construction, kind, img_dir, ann_file, cache_dir,
                            start_method=start)
        rows.append([names[kind], fmt_s(r["seconds"]), mib(r["rss"]), mib(r["pss"]),
                     mib(r["peak_rss"])])
    return "## Annotation index\n\n" + table(
        ["what", "time", "retained RSS", "retained PSS", "process peak RSS"], rows)


def cow_section(img_dir: str, ann_file: str, cache_dir: str, start: str) -> str:
    r = pb.run_isolated(pb.annotation_epoch, img_dir, ann_file, cache_dir, start_method=start)
    return ("## Copy-on-write: one forked worker reads every image's annotations once\n\n"
            + table(["images", "boxes", "time", "worker Private_Dirty at start",
                     "growth over the epoch", "after gc.collect()"],
                    [[f"{r['images']:,}", f"{r['boxes']:,}", fmt_s(r["seconds"]),
                      mib(r["start_private"]), mib(r["growth"]), mib(r["growth_after_gc"])]]))


def loader_section(args: argparse.Namespace, img_dir: str, ann_file: str, cache_dir: str,
                   paths: list[str], start: str) -> str:
    rows = []
    floor = pb.run_isolated(pb.decode_floor, paths, args.min_size, args.max_size,
                            start_method=start)
    rows.append(["bare cv2.imread + resize, 1 process", f"{floor['images_per_s']:.1f}", "",
                 "", "uint8 HxWx3 (numpy)"])
    for workers in sorted({0, args.workers}):
        r = pb.run_isolated(pb.loader_throughput, img_dir, ann_file, cache_dir, workers,
                            args.batch_size, args.batches, args.min_size, args.max_size,
                            start_method=start)
        rows.append([f"train loader, {workers} workers", f"{r['images_per_s']:.1f}",
                     f"{mib(r['tree_pss_start'])} -> {mib(r['tree_pss_end'])}",
                     str(r["processes"]),
                     f"{r['dtype']} {mib(r['bytes_per_image'])} (float32: "
                     f"{mib(r['float32_bytes_per_image'])})"])
    return (f"## Loader: {args.batch_size} images per batch, resize to {args.min_size}/"
            f"{args.max_size}, flip\n\n" + table(
                ["what", "images / s", "process tree PSS (after warm-up -> end)", "processes",
                 "one image as handed over"], rows))


def eval_section(args: argparse.Namespace, val_img_dir: str, val_ann: str, cache_dir: str,
                 work: Path, start: str) -> str:
    results = str(work / "detections.json")
    count = eb.write_detections(val_ann, results, args.eval_dets)
    raw = pb.run_isolated(eb.raw_pycocotools, val_ann, results, start_method=start)
    pb.run_isolated(pb.construction, "warm", val_img_dir, val_ann, cache_dir,
                    start_method=start)  # the dataset's index cache, as after training
    ours = pb.run_isolated(eb.rfcn_evaluator, val_img_dir, val_ann, results, cache_dir,
                           start_method=start)
    diff = max(abs(a - b) for a, b in zip(raw["stats"], ours["stats"], strict=True))
    rows = [["raw pycocotools (COCO, loadRes, COCOeval)", fmt_s(raw["seconds"]), "1.00×",
             mib(raw["peak_rss"]), f"{raw['stats'][0]:.4f}"],
            ["rfcn CocoEvaluator (dataset index, process, evaluate, release)",
             fmt_s(ours["seconds"]), f"{ours['seconds'] / raw['seconds']:.2f}×",
             mib(ours["peak_rss"]), f"{ours['stats'][0]:.4f}"]]
    return (f"## COCO evaluation: {count:,} detections on {args.eval_images:,} images\n\n"
            + table(["what", "time", "vs raw", "process peak RSS", "AP"], rows)
            + f"\n\nlargest difference of the 12 COCOeval stats: {diff:.1e}")


def train_section(args: argparse.Namespace, root: Path, work: Path, parse_s: float) -> str:
    cache, rows = work / "e2e_cache", []
    command = ""
    for cold in (True, False):
        r = train_end_to_end(REPO, root, cache, work / "e2e_run", cold=cold,
                             workers=args.train_workers, iters=args.train_iters)
        if r["returncode"] != 0:
            raise SystemExit("error: tools/train.py failed:\n" + "\n".join(r["tail"]))
        command = r["command"]
        rows.append([f"cache {'cold' if cold else 'warm'}", fmt_s(r["first_iteration_s"]),
                     f"{r['first_iteration_s'] / parse_s:.2f}×", mib(r["peak_tree_pss"]),
                     fmt_s(r["wall_s"])])
    return (f"## End to end: {args.train_workers} workers, {args.train_iters} iterations, "
            f"then the evaluation split\n\n`{command}`\n\n"
            + table(["index cache", "first iteration after", "vs pycocotools parse "
                     f"({fmt_s(parse_s)})", "peak PSS of the process tree", "wall"], rows))


def sample_paths(img_dir: str, ann_file: str, cache_dir: str, n: int) -> list[str]:
    from rfcn.data.coco import CocoDetection

    ds = CocoDetection(img_dir, ann_file, cache_dir=cache_dir)
    step = max(1, len(ds) // n)
    return [ds.image_path(i) for i in range(0, len(ds), step)][:n]


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    start = "fork" if args.quick else "spawn"
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_data_"))
    try:
        if args.ann_file:
            ann_file, img_dir = os.path.expanduser(args.ann_file), os.path.expanduser(args.img_dir)
            if "train" in args.sections:
                raise SystemExit("error: --sections train needs the generated files "
                                 "(not --ann-file)")
        else:
            syn = write_coco_size_annotations(work / "coco", args.images, args.annotations)
            ann_file, img_dir = str(syn.ann_file), str(syn.image_dir)
        val = None
        if {"eval", "train"} & set(args.sections):
            val = write_coco_size_annotations(work / "coco_val", args.eval_images,
                                              args.eval_annotations, seed=1)
        cache_dir = str(work / "index_cache")
        size = os.path.getsize(ann_file)
        print(f"# Data pipeline: {ann_file} ({size / 2**20:.0f} MB)\n", flush=True)
        print(environment(torch.device("cpu")) + "\n", flush=True)
        if "index" in args.sections:
            print(index_section(img_dir, ann_file, cache_dir, start) + "\n", flush=True)
        if "cow" in args.sections:
            print(cow_section(img_dir, ann_file, cache_dir, start) + "\n", flush=True)
        if "loader" in args.sections:
            paths = sample_paths(img_dir, ann_file, cache_dir,
                                 max(8, args.batch_size * (args.batches + 1)))
            print(loader_section(args, img_dir, ann_file, cache_dir, paths, start) + "\n",
                  flush=True)
        if "eval" in args.sections and val is not None:
            print(eval_section(args, str(val.image_dir), str(val.ann_file), cache_dir, work,
                               start) + "\n", flush=True)
        if "train" in args.sections and val is not None:
            parse = pb.run_isolated(pb.construction, "pycocotools", img_dir, ann_file,
                                    cache_dir, start_method=start)
            root = write_coco_root(work / "coco_root", syn, val)
            print(train_section(args, root, work, parse["seconds"]), flush=True)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
