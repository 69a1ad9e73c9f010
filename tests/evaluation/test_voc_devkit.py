"""VOC mAP as the devkit counts it (issue 11 §2): a VOC folder on disk, detections written the
way results files hold them, scored by a float64 port of py-faster-rcnn's `voc_eval` that
reads the XML itself, and by rfcn (dataset + VOCEvaluator) from the same detections."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from rfcn.data import VOCDetection
from rfcn.data.loader import build_test_loader
from rfcn.evaluation.evaluator import inference_on_dataset
from rfcn.evaluation.voc import VOCEvaluator

CLASSES = ["cat", "dog", "bus"]


# ---- a VOC folder ---------------------------------------------------------------------------


VocImages = dict[str, tuple[int, int, list[tuple[str, tuple, int]]]]


def _write_voc(root: Path, images: VocImages) -> None:
    """images: name -> (width, height, [(class, (xmin, ymin, xmax, ymax) 1-based, difficult)])."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, (w, h, objects) in images.items():
        ann = ET.Element("annotation")
        ET.SubElement(ann, "filename").text = f"{name}.jpg"
        size = ET.SubElement(ann, "size")
        ET.SubElement(size, "width").text = str(w)
        ET.SubElement(size, "height").text = str(h)
        for cls, box, difficult in objects:
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = cls
            ET.SubElement(obj, "difficult").text = str(difficult)
            bnd = ET.SubElement(obj, "bndbox")
            for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
                ET.SubElement(bnd, tag).text = str(v)
        ET.ElementTree(ann).write(root / "Annotations" / f"{name}.xml")
        cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"), np.zeros((h, w, 3), np.uint8))
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(images) + "\n")


def _random_voc(root: Path, rng: np.random.Generator, n_images: int = 12):
    images = {}
    for i in range(n_images):
        w, h = int(rng.integers(60, 120)), int(rng.integers(60, 120))
        objects = []
        for _ in range(int(rng.integers(0, 5))):
            x1, y1 = int(rng.integers(1, w - 20)), int(rng.integers(1, h - 20))
            x2, y2 = int(rng.integers(x1 + 3, w + 1)), int(rng.integers(y1 + 3, h + 1))
            objects.append((CLASSES[int(rng.integers(3))], (x1, y1, x2, y2),
                            int(rng.random() < 0.15)))
        images[f"{i:06d}"] = (w, h, objects)
    _write_voc(root, images)
    return images


def _random_detections(images, rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """Continuous-pixel detections as the model gives them: jittered ground truth (so near
    the 0.5 threshold) plus background boxes, random scores."""
    out = {}
    for name, (w, h, objects) in images.items():
        boxes, labels = [], []
        for cls, (x1, y1, x2, y2), _ in objects:
            for _ in range(int(rng.integers(0, 3))):
                jitter = rng.normal(0, 0.12 * max(x2 - x1, y2 - y1), 4)
                box = np.array([x1 - 1, y1 - 1, x2, y2], float) + jitter
                boxes.append(np.clip(box, 0, [w, h, w, h]))
                labels.append(CLASSES.index(cls) + 1 if rng.random() > 0.1 else 1)
        for _ in range(int(rng.integers(0, 3))):
            x1, y1 = rng.uniform(0, w - 5), rng.uniform(0, h - 5)
            boxes.append(np.array([x1, y1, rng.uniform(x1 + 1, w), rng.uniform(y1 + 1, h)]))
            labels.append(int(rng.integers(1, 4)))
        valid = [b[2] > b[0] and b[3] > b[1] for b in boxes]
        out[name] = {
            "boxes": np.array([b for b, v in zip(boxes, valid, strict=True) if v]).reshape(-1, 4),
            "labels": np.array([c for c, v in zip(labels, valid, strict=True) if v], np.int64),
        }
        out[name]["scores"] = rng.random(len(out[name]["labels"]))
    return out


def _results_files(dets, folder: Path) -> dict[str, Path]:
    """comp4_det_test_<class>.txt: `image score xmin ymin xmax ymax`, boxes in the devkit's
    1-based convention (continuous (x1, y1, x2, y2) -> (x1 + 1, y1 + 1, x2, y2), as detectron2
    writes them), full float precision."""
    files = {cls: folder / f"comp4_det_test_{cls}.txt" for cls in CLASSES}
    lines: dict[str, list[str]] = {cls: [] for cls in CLASSES}
    for name, d in dets.items():
        for (x1, y1, x2, y2), label, score in zip(d["boxes"], d["labels"], d["scores"],
                                                  strict=True):
            coords = " ".join(repr(float(v)) for v in (x1 + 1, y1 + 1, x2, y2))
            lines[CLASSES[label - 1]].append(f"{name} {float(score)!r} {coords}")
    for cls, path in files.items():
        path.write_text("\n".join(lines[cls]) + ("\n" if lines[cls] else ""))
    return files


# ---- a float64 port of py-faster-rcnn's voc_eval (reads the XML itself) --------------------


def _devkit_ap(rec: list[float], prec: list[float], use_07: bool) -> float:
    if use_07:
        total = 0.0
        for t in np.arange(0.0, 1.1, 0.1):  # py-faster-rcnn's thresholds, float steps and all
            above = [p for r, p in zip(rec, prec, strict=True) if r >= t]
            total += (max(above) if above else 0.0) / 11
        return total
    mrec, mpre = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]
               for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])


def _devkit_voc_eval(det_file: Path, voc_root: Path, cls: str, use_07: bool) -> float | None:
    names = (voc_root / "ImageSets" / "Main" / "test.txt").read_text().split()
    gt: dict[str, list[dict]] = {}
    npos = 0
    for name in names:
        objs = []
        for obj in ET.parse(voc_root / "Annotations" / f"{name}.xml").findall("object"):
            if obj.find("name").text != cls:
                continue
            bb = obj.find("bndbox")
            box = [int(bb.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax")]
            difficult = int(obj.find("difficult").text) == 1
            objs.append({"bbox": box, "difficult": difficult, "det": False})
            npos += 0 if difficult else 1
        gt[name] = objs
    rows = [line.split() for line in det_file.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: -float(r[1]))
    tp, fp = [], []
    for row in rows:
        bb = [float(v) for v in row[2:]]
        best, best_obj = -1.0, None
        for obj in gt[row[0]]:
            g = obj["bbox"]
            iw = max(min(g[2], bb[2]) - max(g[0], bb[0]) + 1.0, 0.0)
            ih = max(min(g[3], bb[3]) - max(g[1], bb[1]) + 1.0, 0.0)
            union = ((bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                     + (g[2] - g[0] + 1.0) * (g[3] - g[1] + 1.0) - iw * ih)
            if iw * ih / union > best:
                best, best_obj = iw * ih / union, obj
        hit = best > 0.5  # py-faster-rcnn: ovmax > ovthresh
        if hit and best_obj["difficult"]:
            tp.append(0.0)
            fp.append(0.0)
        elif hit and not best_obj["det"]:
            best_obj["det"] = True
            tp.append(1.0)
            fp.append(0.0)
        else:
            tp.append(0.0)
            fp.append(1.0)
    if npos == 0:
        return None  # py-faster-rcnn would divide by zero here
    ctp, cfp = np.cumsum(tp).tolist(), np.cumsum(fp).tolist()
    rec = [t / npos for t in ctp]
    prec = [t / max(t + f, np.finfo(np.float64).eps) for t, f in zip(ctp, cfp, strict=True)]
    return _devkit_ap(rec, prec, use_07)


# ---- tests ---------------------------------------------------------------------------------


def _rfcn_metrics(voc_root: Path, dets) -> dict:
    ds = VOCDetection(voc_root, image_set="test", class_names=CLASSES)
    evaluator = VOCEvaluator.from_dataset(ds)
    targets = [ds.get_annotation(i) for i in range(len(ds))]
    outputs = [{k: torch.as_tensor(v) for k, v in dets[name].items()} for name in ds.image_names]
    evaluator.process(targets, outputs)
    return evaluator.evaluate()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_equals_the_devkit_on_disk(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    root = tmp_path / "VOC"
    images = _random_voc(root, rng)
    dets = _random_detections(images, rng)
    files = _results_files(dets, tmp_path)
    metrics = _rfcn_metrics(root, dets)
    for use_07, key, mean_key in ((False, "per_class", "mAP"), (True, "per_class_07", "mAP07")):
        want = {cls: _devkit_voc_eval(files[cls], root, cls, use_07) for cls in CLASSES}
        for cls in CLASSES:
            if want[cls] is None:
                assert metrics[key][cls] is None
            else:
                assert metrics[key][cls] == pytest.approx(want[cls], abs=1e-9), (cls, key)
        valid = [v for v in want.values() if v is not None]
        assert metrics[mean_key] == pytest.approx(float(np.mean(valid)), abs=1e-9)


def test_one_pixel_reproducer_is_a_false_positive(tmp_path: Path) -> None:
    """XML box (1, 1, 10, 10) and detection [0, 0, 15, 14]: the devkit's IoU is 100/210 =
    0.476 (a false positive); counting the box one pixel too large gave 121/240 = 0.504."""
    root = tmp_path / "VOC"
    _write_voc(root, {"000001": (40, 40, [("cat", (1, 1, 10, 10), 0)])})
    dets = {"000001": {"boxes": np.array([[0.0, 0.0, 15.0, 14.0]]), "labels": np.array([1]),
                       "scores": np.array([0.9])}}
    files = _results_files(dets, tmp_path)
    assert _devkit_voc_eval(files["cat"], root, "cat", use_07=False) == 0.0
    assert _rfcn_metrics(root, dets)["per_class"]["cat"] == 0.0
    # and a detection with the devkit's IoU 100/200 + epsilon above 0.5 is a match
    dets["000001"]["boxes"] = np.array([[0.0, 0.0, 10.0, 19.9]])
    assert _rfcn_metrics(root, dets)["per_class"]["cat"] == pytest.approx(1.0)


class _PerfectBySize(nn.Module):
    """Returns each image's ground truth as detections (images told apart by their size)."""

    def __init__(self, ds: VOCDetection) -> None:
        super().__init__()
        self.by_size = {}
        for i in range(len(ds)):
            t = ds.get_annotation(i)
            self.by_size[t["orig_size"]] = t

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for img in images:
            t = self.by_size[tuple(img.shape[-2:])]
            n = len(t["labels"])
            out.append({"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(n)})
        return out


def test_unreadable_image_keeps_its_ground_truth(tmp_path: Path, caplog) -> None:
    root = tmp_path / "VOC"
    _write_voc(root, {
        "000001": (40, 30, [("cat", (1, 1, 10, 10), 0)]),
        "000002": (50, 30, [("cat", (5, 5, 20, 20), 0)]),
    })
    (root / "JPEGImages" / "000002.jpg").write_bytes(b"not a jpeg")
    ds = VOCDetection(root, image_set="test", class_names=CLASSES)
    loader = build_test_loader(ds, 1, num_workers=0)
    with caplog.at_level(logging.WARNING):
        metrics = inference_on_dataset(_PerfectBySize(ds), loader, VOCEvaluator.from_dataset(ds),
                                       torch.device("cpu"))
    # one of the two cats can never be found: recall 0.5, not the 1.0 of "the images we read"
    assert metrics["per_class"]["cat"] == pytest.approx(0.5)
    assert metrics["num_images"] == 2
    assert "1 of 2 images were not processed" in caplog.text
