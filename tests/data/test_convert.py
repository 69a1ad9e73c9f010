"""rfcn.data.convert: VOC-XML, YOLO-txt and labelme datasets -> COCO JSON, round-tripped
through rfcn's own readers (CocoDetection, VOCDetection) on tiny OpenCV-made datasets."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from data_builders import rect_image, voc_xml, write_rgb

from rfcn.data import CocoDetection, VOCDetection
from rfcn.data.convert import FORMATS, ConversionReport, SplitSummary, convert

Boxes = dict[str, tuple[np.ndarray, list[str]]]  # file_name -> (boxes [M, 4] xyxy, class names)


def coco_boxes(ann_file: str | Path, img_dir: str | Path) -> Boxes:
    """Load a written file with rfcn's reader: it must find nothing to fix."""
    ds = CocoDetection(img_dir, ann_file)
    assert ds.num_bad_records == 0, ds.bad_records
    out: Boxes = {}
    for i in range(len(ds)):
        t = ds.get_annotation(i)
        name = Path(ds.image_path(i)).relative_to(img_dir).as_posix()
        out[name] = (t["boxes"].numpy(), [ds.class_names[k] for k in t["labels"].tolist()])
    return out


def assert_boxes(got: Boxes, expected: dict[str, list[tuple[str, tuple[float, ...]]]]) -> None:
    assert sorted(got) == sorted(expected)
    for name, objs in expected.items():
        boxes, labels = got[name]
        assert labels == [o[0] for o in objs], name
        np.testing.assert_allclose(boxes, np.array([o[1] for o in objs]).reshape(-1, 4),
                                   atol=1e-4, rtol=0, err_msg=name)


def kinds(report: ConversionReport) -> list[tuple[str, str, str]]:
    return sorted((e.file, e.action, e.reason) for e in report.entries)


# --- VOC ------------------------------------------------------------------------------------


def voc_layout(devkit: Path) -> Path:
    """The `voc_devkit` fixture's VOC2007 folder (Annotations/, JPEGImages/, ImageSets/) with
    more bad records: a non-finite box, a malformed XML, an XML without its image."""
    root = devkit / "VOC2007"
    (root / "Annotations" / "000003.xml").write_text(voc_xml("000003", 20, 20, [
        {"name": "car"},  # no bndbox
        {"name": "bus", "bndbox": ("nan", 1, 5, 5)},
    ]))
    (root / "Annotations" / "000004.xml").write_text("<annotation><size><width>")  # malformed
    (root / "Annotations" / "000005.xml").write_text(voc_xml("000005", 10, 10, []))  # no image
    return root


VOC_EXPECTED = {
    "JPEGImages/000001.jpg": [("dog", (10, 5, 30, 25)), ("cat", (0, 0, 10, 10))],
    "JPEGImages/000002.jpg": [("unicorn", (0, 0, 10, 10)), ("person", (4, 4, 30, 60))],
    "JPEGImages/000003.jpg": [],
}


def test_voc_round_trip(tmp_path: Path, voc_devkit: Path) -> None:
    root = voc_layout(voc_devkit)
    out = tmp_path / "out"
    report = convert("voc", root, out)
    # every class name of a box read, sorted; "car" had no box
    assert report.classes == ["bus", "cat", "dog", "person", "unicorn"]
    assert report.img_dir == str(root.resolve())
    assert list(report.splits) == ["all"] and report.splits["all"].num_images == 3
    ann_file = out / "annotations.json"
    got = coco_boxes(ann_file, report.img_dir)
    assert_boxes(got, VOC_EXPECTED)
    assert kinds(report) == sorted([
        ("Annotations/000002.xml", "clipped", "reaching outside the image"),
        ("Annotations/000002.xml", "dropped", "zero or negative size"),
        ("Annotations/000003.xml", "dropped", "missing or malformed <bndbox>"),
        ("Annotations/000003.xml", "dropped", "non-finite coordinates"),
        ("Annotations/000004.xml", "skipped", "unreadable or malformed XML"),
        ("Annotations/000005.xml", "skipped", "image file not found"),
    ])
    data = json.loads(ann_file.read_text())
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 5]
    assert all(a["iscrowd"] == 0 for a in data["annotations"])
    # the difficult flag is an extra key that CocoDetection accepts (and ignores)
    difficult = [a["category_id"] for a in data["annotations"] if a.get("difficult") == 1]
    assert difficult == [report.classes.index("cat") + 1]
    saved = json.loads((out / "convert_report.json").read_text())
    assert saved["counts"]["clipped: reaching outside the image"] == 1
    assert len(saved["entries"]) == 6 and "dataset=coco_json" in saved["train_command"]

    # the same folder read by rfcn's VOC reader gives the same boxes and labels
    voc = VOCDetection(root, image_set="trainval", class_names=report.classes)
    for i in range(len(voc)):
        name = Path(voc.image_path(i)).relative_to(root).as_posix()
        t = voc.get_annotation(i)
        boxes, labels = got[name]
        np.testing.assert_allclose(boxes, t["boxes"].numpy(), atol=1e-4, rtol=0)
        assert labels == [voc.class_names[k] for k in t["labels"].tolist()]


def test_voc_given_classes_drop_the_others(tmp_path: Path, voc_devkit: Path) -> None:
    report = convert("voc", voc_layout(voc_devkit), tmp_path / "out", classes=["person", "dog"])
    assert report.classes == ["person", "dog"]
    got = coco_boxes(tmp_path / "out" / "annotations.json", report.img_dir)
    assert_boxes(got, {"JPEGImages/000001.jpg": [("dog", (10, 5, 30, 25))],
                       "JPEGImages/000002.jpg": [("person", (4, 4, 30, 60))],
                       "JPEGImages/000003.jpg": []})
    unknown = sorted(e.detail for e in report.entries if e.reason == "unknown class")
    assert unknown == ["object 1 'unicorn'", "object 2 'bus'", "object 2 'cat'"]


def flat_voc(root: Path, n: int) -> None:
    """n images with one box each, XML next to the image (PNG, named by <filename>)."""
    root.mkdir(parents=True)
    for i in range(n):
        write_rgb(root / f"img{i}.png", rect_image(8, 8, (0, 0, 0, 0)))
        xml = voc_xml(f"img{i}", 8, 8, [{"name": f"c{i % 3}", "bndbox": (1, 1, 4 + i % 4, 5)}])
        (root / f"img{i}.xml").write_text(xml.replace(f"img{i}.jpg", f"img{i}.png"))


def test_voc_flat_folder_file_names_relative_to_input(tmp_path: Path) -> None:
    flat_voc(tmp_path / "flat" / "sub", 2)
    report = convert("voc", tmp_path / "flat", tmp_path / "out")
    got = coco_boxes(tmp_path / "out" / "annotations.json", tmp_path / "flat")
    assert_boxes(got, {"sub/img0.png": [("c0", (0, 0, 4, 5))],
                       "sub/img1.png": [("c1", (0, 0, 5, 5))]})
    assert report.entries == []


def test_seeded_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    flat_voc(tmp_path / "flat", 10)

    def split(seed: int, out: str) -> tuple[list[str], list[str]]:
        report = convert("voc", tmp_path / "flat", tmp_path / out, val_fraction=0.3, seed=seed)
        assert list(report.splits) == ["train", "val"]
        names = []
        for s in ("train", "val"):
            data = json.loads((tmp_path / out / f"{s}.json").read_text())
            ids = {i["id"] for i in data["images"]}
            assert {a["image_id"] for a in data["annotations"]} <= ids
            assert len(data["annotations"]) == len(ids) == report.splits[s].num_images
            names.append(sorted(i["file_name"] for i in data["images"]))
        return names[0], names[1]

    train, val = split(0, "a")
    assert len(val) == 3 and not set(train) & set(val)
    assert sorted(train + val) == sorted(f"img{i}.png" for i in range(10))
    assert split(0, "b") == (train, val)
    assert split(1, "c") != (train, val)  # fixed seeds: a pinned fact, not a chance


# --- YOLO -----------------------------------------------------------------------------------


def yolo_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "yolo"
    for d in ("images/train", "images/val", "labels/train", "labels/val"):
        (root / d).mkdir(parents=True)
    write_rgb(root / "images/train/a.jpg", rect_image(48, 64, (16, 12, 48, 36)))
    write_rgb(root / "images/train/nolabel.png", rect_image(20, 30, (0, 0, 0, 0)))
    (root / "images/train/bad.jpg").write_text("not an image\n")
    (root / "labels/train/bad.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "labels/train/a.txt").write_text("\n".join([
        "0 0.5 0.5 0.5 0.5",  # (16, 12, 48, 36)
        "1 0.9 0.9 0.4 0.4",  # (44.8, 33.6, 70.4, 52.8) clipped to the 64x48 image
        "1 0.125 0.125 0.375 0.125 0.25 0.5",  # a segment: its box (8, 6, 24, 24)
        "5 0.5 0.5 0.1 0.1",  # unknown class id
        "0 0.5 0.5 0 0.2",  # zero width
        "0 nan 0.5 0.1 0.1",
        "0 0.5 0.5",  # malformed
        "",
    ]))
    write_rgb(root / "images/val/c.png", rect_image(40, 40, (0, 0, 20, 40)))
    (root / "labels/val/c.txt").write_text("1 0.25 0.5 0.5 1.0\n")
    (root / "val.txt").write_text("./images/val/c.png\nimages/val/missing.png\n")
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: val.txt\nnames:\n  0: cat\n  1: dog\n")
    return root


def test_yolo_round_trip_with_its_splits(tmp_path: Path) -> None:
    root = yolo_dataset(tmp_path)
    out = tmp_path / "out"
    report = convert("yolo", root / "data.yaml", out, val_fraction=0.5)  # the source's split wins
    assert report.classes == ["cat", "dog"]
    assert report.img_dir == str(root.resolve())
    assert {k: s.num_images for k, s in report.splits.items()} == {"train": 2, "val": 1}
    train = coco_boxes(out / "train.json", report.img_dir)
    assert_boxes(train, {
        "images/train/a.jpg": [("cat", (16, 12, 48, 36)), ("dog", (44.8, 33.6, 64, 48)),
                               ("dog", (8, 6, 24, 24))],
        "images/train/nolabel.png": [],
    })
    assert_boxes(coco_boxes(out / "val.json", report.img_dir),
                 {"images/val/c.png": [("dog", (0, 0, 20, 40))]})
    assert kinds(report) == sorted([
        ("images/train/bad.jpg", "skipped", "unreadable image"),
        ("images/train/nolabel.png", "note", "no label file: image kept without boxes"),
        ("val.txt", "skipped", "image file not found"),
        ("labels/train/a.txt", "clipped", "reaching outside the image"),
        ("labels/train/a.txt", "note", "segment converted to its bounding box"),
        ("labels/train/a.txt", "dropped", "unknown class id"),
        ("labels/train/a.txt", "dropped", "zero or negative size"),
        ("labels/train/a.txt", "dropped", "non-finite coordinates"),
        ("labels/train/a.txt", "dropped", "malformed label line (expected 'class cx cy w h')"),
    ])
    assert not (out / "annotations.json").exists()


def test_yolo_names_list_train_only_yaml_elsewhere(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for i in range(4):
        write_rgb(data / "images" / f"{i}.jpg", rect_image(10, 20, (0, 0, 0, 0)))
        (data / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "coins.yaml").write_text("path: ../data\ntrain: images\nnames: [coin]\n")
    report = convert("yolo", tmp_path / "cfg", tmp_path / "out", val_fraction=0.25, seed=3)
    assert {k: s.num_images for k, s in report.splits.items()} == {"train": 3, "val": 1}
    got = coco_boxes(tmp_path / "out" / "train.json", data)
    assert all(v[1] == ["coin"] for v in got.values())
    np.testing.assert_allclose(next(iter(got.values()))[0], [[5, 2.5, 15, 7.5]], atol=1e-4)


# --- labelme --------------------------------------------------------------------------------


def rect(label: str, points: list[list[float]]) -> dict[str, Any]:
    return {"label": label, "points": points, "group_id": None, "shape_type": "rectangle",
            "flags": {}}


def labelme_file(path: Path, image_path: str, h: int, w: int, shapes: list[Any]) -> None:
    path.write_text(json.dumps({"version": "5.4.1", "flags": {}, "shapes": shapes,
                                "imagePath": image_path, "imageData": None,
                                "imageHeight": h, "imageWidth": w}))


def labelme_dataset(root: Path) -> None:
    (root / "imgs").mkdir(parents=True)
    write_rgb(root / "a.jpg", rect_image(48, 64, (10, 8, 30, 28)))
    labelme_file(root / "a.json", "a.jpg", 48, 64, [
        rect("dog", [[30, 28], [10, 8]]),  # corners in any order
        rect("cat", [[50, 40], [80, 70]]),  # clipped to (50, 40, 64, 48)
        {"label": "dog", "points": [[1, 1], [9, 1], [5, 9]], "shape_type": "polygon"},
        rect("dog", [[5, 5], [5, 20]]),  # zero width
        rect("", [[1, 1], [4, 4]]),
        {"label": "cat", "points": [[1, 2]], "shape_type": "rectangle"},
    ])
    write_rgb(root / "imgs" / "b.png", rect_image(30, 20, (0, 0, 0, 0)))
    labelme_file(root / "b.json", "imgs\\b.png", 10, 20,  # Windows path, wrong height
                 [rect("cat", [[2.5, 3.5], [12.25, 20]])])
    (root / "broken.json").write_text("{not json")
    (root / "c.jpg").write_text("not an image")
    labelme_file(root / "c.json", "c.jpg", 10, 10, [rect("cat", [[1, 1], [4, 4]])])
    labelme_file(root / "d.json", "missing.jpg", 10, 10, [])


def test_labelme_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "lm"
    labelme_dataset(root)
    out = root / "out"  # inside the input: a rerun must not read its own output
    report = convert("labelme", root, out)
    assert report.classes == ["cat", "dog"]
    got = coco_boxes(out / "annotations.json", root)
    assert_boxes(got, {"a.jpg": [("dog", (10, 8, 30, 28)), ("cat", (50, 40, 64, 48))],
                       "imgs/b.png": [("cat", (2.5, 3.5, 12.25, 20))]})
    assert kinds(report) == sorted([
        ("a.json", "clipped", "reaching outside the image"),
        ("a.json", "dropped", "not a rectangle shape"),
        ("a.json", "dropped", "zero or negative size"),
        ("a.json", "dropped", "shape without a label"),
        ("a.json", "dropped", "malformed rectangle (expected two [x, y] points)"),
        ("b.json", "corrected", "imageHeight/imageWidth differ from the image: image's used"),
        ("broken.json", "skipped", "unreadable or malformed JSON"),
        ("c.json", "skipped", "unreadable image"),
        ("d.json", "skipped", "image file not found"),
    ])
    assert "'polygon'" in next(e.detail for e in report.entries if e.reason.startswith("not a"))
    again = convert("labelme", root, out)
    assert again.entries == report.entries


# --- errors ---------------------------------------------------------------------------------


def test_no_usable_image_is_an_error_naming_the_input(tmp_path: Path) -> None:
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "broken.json").write_text("[")
    with pytest.raises(ValueError, match=r"lm: no usable image"):
        convert("labelme", tmp_path / "lm", tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "convert_report.json").read_text())
    assert saved["entries"][0]["reason"] == "unreadable or malformed JSON"


@pytest.mark.parametrize("fmt, make, match", [
    ("coco", None, "unknown format 'coco'"),
    ("voc", "empty", "no .xml file found"),
    ("labelme", "missing", "no such file or directory"),
    ("yolo", "empty", "expected data.yaml"),
])
def test_bad_arguments(tmp_path: Path, fmt: str, make: str | None, match: str) -> None:
    if make == "empty":
        (tmp_path / "in").mkdir()
    with pytest.raises(ValueError, match=match):
        convert(fmt, tmp_path / "in", tmp_path / "out")


def test_bad_split_arguments(tmp_path: Path) -> None:
    flat_voc(tmp_path / "flat", 1)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="val_fraction"):
            convert("voc", tmp_path / "flat", tmp_path / "out", val_fraction=bad)
    with pytest.raises(ValueError, match="cannot split 1 image"):
        convert("voc", tmp_path / "flat", tmp_path / "out", val_fraction=0.5)
    with pytest.raises(ValueError, match="distinct"):
        convert("voc", tmp_path / "flat", tmp_path / "out", classes=["a", "a"])
    assert FORMATS == ("voc", "yolo", "labelme")


def test_train_command_survives_shell_and_hydra_parsing() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    odd = "/data/my set, v2 (o'neil)\\"
    report = ConversionReport("voc", "/in", "/out", img_dir=odd)
    report.splits["train"] = SplitSummary("/out/train.json", 1, 1)
    report.splits["val"] = SplitSummary("/out/val.json", 1, 1)
    args = shlex.split(report.train_command())
    assert args[:3] == ["python", "tools/train.py", "dataset=coco_json"]
    parser = OverridesParser.create()
    values = {o.key_or_group: o.value() for o in parser.parse_overrides(args[3:])}
    assert values == {"dataset.train.ann_file": "/out/train.json", "dataset.train.img_dir": odd,
                      "dataset.val.ann_file": "/out/val.json", "dataset.val.img_dir": odd}
