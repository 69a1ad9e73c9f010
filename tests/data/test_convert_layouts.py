"""rfcn.data.convert on folders as labelling tools leave them (labelImg, the VOC devkit, CVAT,
Roboflow, Ultralytics, labelme), built in tmp_path with real JPEGs encoded by OpenCV, and on the
broken images they hold (truncated, not an image, another size than annotated)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from rfcn.data import CocoDetection
from rfcn.data.convert import ConversionReport, convert


def jpeg(h: int, w: int, value: int = 90) -> bytes:
    """A real h x w JPEG, encoded by OpenCV."""
    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def truncated_jpeg() -> bytes:
    """The first half of a real JPEG (noise, so that its scan starts early): a cut copy."""
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()[: len(buf) // 2]


def put(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def voc_xml(filename: str, h: int, w: int, boxes: list[tuple[str, int, int, int, int]],
            path: str = "") -> str:
    """labelImg's XML (1-based inclusive <bndbox>; <path> where it was labelled)."""
    objs = "".join(f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated>"
                   f"<difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                   f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                   for n, x1, y1, x2, y2 in boxes)
    return (f"<annotation><folder>images</folder><filename>{filename}</filename>"
            f"<path>{path}</path><source><database>Unknown</database></source><size>"
            f"<width>{w}</width><height>{h}</height><depth>3</depth></size><segmented>0"
            f"</segmented>{objs}</annotation>")


def written(out: Path, report: ConversionReport, split: str = "annotations") -> dict:
    """file_name -> (h, w, [(class, xyxy)]) of a written file, loaded by rfcn's reader."""
    ds = CocoDetection(report.img_dir, out / f"{split}.json")
    assert ds.num_bad_records == 0, ds.bad_records
    data = json.loads((out / f"{split}.json").read_text())
    sizes = {i["file_name"]: (i["height"], i["width"]) for i in data["images"]}
    got = {}
    for i in range(len(ds)):
        name = Path(ds.image_path(i)).relative_to(report.img_dir).as_posix()
        t = ds.get_annotation(i)
        got[name] = (*sizes[name], [(ds.class_names[k], tuple(b)) for k, b in
                                    zip(t["labels"].tolist(), t["boxes"].tolist(), strict=True)])
    return got


def reasons(report: ConversionReport) -> list[tuple[str, str, str]]:
    return sorted((e.file, e.action, e.reason) for e in report.entries)


# --- VOC ------------------------------------------------------------------------------------


def labelimg(root: Path, names: list[str], images: str = "images",
             annots: str = "annots") -> None:
    """labelImg's layout: annots/x.xml beside images/x.jpg."""
    for i, name in enumerate(names):
        put(root / images / f"{name}.jpg", jpeg(20, 30))
        put(root / annots / f"{name}.xml", voc_xml(f"{name}.jpg", 20, 30,
                                                   [("cat", 3, 2, 10 + i, 12)],
                                                   f"C:\\Users\\me\\{images}\\{name}.jpg"))


def test_labelimg_annots_beside_images(tmp_path: Path) -> None:
    labelimg(tmp_path / "photos", ["a", "b"])
    report = convert("voc", tmp_path / "photos", tmp_path / "out")
    assert report.entries == []
    assert report.img_dir == str(tmp_path / "photos")
    assert written(tmp_path / "out", report) == {
        "images/a.jpg": (20, 30, [("cat", (2, 1, 10, 12))]),
        "images/b.jpg": (20, 30, [("cat", (2, 1, 11, 12))]),
    }


def test_input_is_the_xml_folder_images_in_a_sibling(tmp_path: Path) -> None:
    labelimg(tmp_path / "photos", ["a"], images="imgs")
    report = convert("voc", tmp_path / "photos" / "annots", tmp_path / "out")
    assert report.img_dir == str(tmp_path / "photos")
    assert list(written(tmp_path / "out", report)) == ["imgs/a.jpg"]


def test_voc_devkit_with_symlinked_folders(tmp_path: Path) -> None:
    labelimg(tmp_path / "store", ["x", "y"], images="jpgs", annots="xmls")
    put(tmp_path / "elsewhere" / "z.jpg", jpeg(20, 30))
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    voc.mkdir(parents=True)
    os.symlink(tmp_path / "store" / "xmls", voc / "Annotations")
    os.symlink(tmp_path / "store" / "jpgs", voc / "JPEGImages")
    os.symlink(tmp_path / "VOCdevkit", voc / "loop")  # a link back up is walked once
    (voc / "more").mkdir()
    put(voc / "more" / "z.xml", voc_xml("z.jpg", 20, 30, [("dog", 1, 1, 5, 5)]))
    os.symlink(tmp_path / "elsewhere" / "z.jpg", voc / "more" / "z.jpg")  # a linked file
    report = convert("voc", tmp_path / "VOCdevkit", tmp_path / "out")
    assert report.entries == []
    # file_name keeps the links: the dataset folder stays the image root
    assert sorted(written(tmp_path / "out", report)) == [
        "VOC2007/JPEGImages/x.jpg", "VOC2007/JPEGImages/y.jpg", "VOC2007/more/z.jpg"]


def test_images_anywhere_under_input_filename_breaks_ties(tmp_path: Path) -> None:
    root = tmp_path / "mess"
    put(root / "labels" / "2024" / "p.xml", voc_xml("p.png", 20, 30, [("cat", 1, 1, 4, 4)]))
    put(root / "pictures" / "deep" / "p.jpg", jpeg(20, 30))
    ok, png = cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))
    put(root / "pictures" / "deep" / "p.png", png.tobytes())  # <filename> names this one
    put(root / "q.xml", voc_xml("q.jpg", 20, 30, [("cat", 1, 1, 4, 4)]))
    put(root / "a" / "q.jpg", jpeg(20, 30))
    put(root / "b" / "q.jpg", jpeg(20, 30))  # as close as a/q.jpg: the first, noted
    report = convert("voc", root, tmp_path / "out")
    assert sorted(written(tmp_path / "out", report)) == ["a/q.jpg", "pictures/deep/p.png"]
    assert reasons(report) == [("q.xml", "note", "several images match: the closest used")]


def test_img_dir_says_where_the_images_are(tmp_path: Path) -> None:
    for name in ("a", "b"):
        put(tmp_path / "xml" / f"{name}.xml", voc_xml(f"{name}.jpg", 20, 30,
                                                      [("cat", 1, 1, 4, 4)]))
        put(tmp_path / "disk2" / "mnt" / "data" / "jpg" / f"{name}.jpg", jpeg(20, 30))
    with pytest.raises(ValueError) as err:
        convert("voc", tmp_path / "xml", tmp_path / "out")
    msg = str(err.value)
    assert "no usable image (2 problems" in msg and "the first 2:" in msg
    assert "a.xml: no image a.* beside it, in sibling folders or anywhere under" in msg
    assert "skipped (image file not found)" in msg
    assert "hint: pass img_dir=DIR to say where the images are" in msg
    img_dir = tmp_path / "disk2" / "mnt"
    report = convert("voc", tmp_path / "xml", tmp_path / "out", img_dir=img_dir)
    assert report.img_dir == str(img_dir)
    assert sorted(written(tmp_path / "out", report)) == ["data/jpg/a.jpg", "data/jpg/b.jpg"]


def test_two_xml_files_one_image_keep_the_first(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    labelimg(root, ["a"])
    put(root / "annots" / "a_copy.xml", voc_xml("a.jpg", 20, 30, [("dog", 1, 1, 4, 4)]))
    report = convert("voc", root, tmp_path / "out")
    assert reasons(report) == [("annots/a_copy.xml", "skipped",
                                "image already annotated by another file")]
    assert written(tmp_path / "out", report)["images/a.jpg"][2] == [("cat", (2, 1, 10, 12))]


def test_wrong_format_names_the_files_found(tmp_path: Path) -> None:
    labelme(tmp_path / "lm" / "a.json", "a.jpg", 20, 30, None)
    with pytest.raises(ValueError, match=r"no \.xml file found .*found 1 \.json files "
                                         r"\(from=labelme\?\)"):
        convert("voc", tmp_path / "lm", tmp_path / "out")


def test_cvat_voc_export(tmp_path: Path) -> None:
    root = tmp_path / "cvat"
    for name in ("frame_000000", "frame_000001"):
        put(root / "JPEGImages" / f"{name}.jpg", jpeg(24, 32))
        put(root / "Annotations" / f"{name}.xml", voc_xml(f"{name}.jpg", 24, 32,
                                                          [("car", 2, 2, 9, 9)]))
    put(root / "ImageSets" / "Main" / "default.txt", "frame_000000\nframe_000001\n")
    put(root / "labelmap.txt", "# label:color_rgb:parts:actions\ncar:250,50,83::\n")
    report = convert("voc", root, tmp_path / "out", val_fraction=0.5)
    assert {k: s.num_images for k, s in report.splits.items()} == {"train": 1, "val": 1}
    assert report.classes == ["car"] and report.entries == []


def test_roboflow_voc_export(tmp_path: Path) -> None:
    root = tmp_path / "rf"
    for split in ("train", "valid", "test"):
        name = f"img_{split}_jpg.rf.0a1b2c"
        put(root / split / f"{name}.jpg", jpeg(16, 16))
        put(root / split / f"{name}.xml", voc_xml(f"{name}.jpg", 16, 16,
                                                  [("coin", 1, 1, 8, 8)]))
    put(root / "README.roboflow.txt", "exported from roboflow.com\n")
    report = convert("voc", root, tmp_path / "out")
    assert report.splits["all"].num_images == 3 and report.entries == []


# --- broken images --------------------------------------------------------------------------


def test_truncated_and_fake_images_are_skipped_and_named(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    labelimg(root, ["good", "cut", "text"])
    (root / "images" / "cut.jpg").write_bytes(truncated_jpeg())  # an interrupted copy
    (root / "images" / "text.jpg").write_text("<html>404 not found</html>\n")
    report = convert("voc", root, tmp_path / "out")
    assert reasons(report) == [("annots/cut.xml", "skipped", "truncated image"),
                               ("annots/text.xml", "skipped", "unreadable image")]
    cut = next(e for e in report.entries if e.reason == "truncated image")
    assert cut.detail == "image images/cut.jpg: truncated JPEG file (no end-of-image marker)"
    assert list(written(tmp_path / "out", report)) == ["images/good.jpg"]
    text = "\n".join(report.summary_lines())
    assert "2 files skipped (not in the output): 1 truncated image, 1 unreadable image" in text
    assert "images/cut.jpg: truncated JPEG" in text and "images/text.jpg: not a readable" in text


def test_many_bad_images_first_few_named_then_counted(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    labelimg(root, ["ok"] + [f"bad{i}" for i in range(8)])
    for i in range(8):
        (root / "images" / f"bad{i}.jpg").write_bytes(b"")
    report = convert("voc", root, tmp_path / "out")
    lines = report.summary_lines()
    named = [ln for ln in lines if "empty file" in ln]
    assert len(named) == 5 and "annots/bad0.xml: image images/bad0.jpg: empty file" in named[0]
    assert f"    ... and 3 more, see {tmp_path / 'out'}/convert_report.json" in lines


def test_size_mismatch_uses_the_decoded_size(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    put(root / "images" / "a.jpg", jpeg(40, 60))  # re-exported larger after labelling
    put(root / "annots" / "a.xml", voc_xml("a.jpg", 20, 30, [("cat", 21, 11, 50, 35)]))
    put(root / "images" / "b.jpg", jpeg(20, 30))
    put(root / "annots" / "b.xml", voc_xml("b.jpg", 0, 0, [("cat", 1, 1, 5, 5)]))  # labelImg 0
    report = convert("voc", root, tmp_path / "out")
    assert reasons(report) == [
        ("annots/a.xml", "corrected", "<size> differs from the image: image's used"),
        ("annots/b.xml", "corrected", "no valid <size>: size read from the image")]
    assert "annotated (h, w) = (20, 30), decoded (40, 60)" in report.entries[0].detail
    got = written(tmp_path / "out", report)
    assert got["images/a.jpg"] == (40, 60, [("cat", (20, 10, 50, 35))])  # not clipped to 30x20


# --- YOLO -----------------------------------------------------------------------------------


def yolo_pair(image: Path, label_dir: Path | None, lines: str, h: int = 20, w: int = 40) -> None:
    put(image, jpeg(h, w))
    put((label_dir or image.parent) / f"{image.stem}.txt", lines)


def test_cvat_yolo_export(tmp_path: Path) -> None:
    root = tmp_path / "cvat_yolo"
    put(root / "obj.data", "classes = 2\ntrain = data/train.txt\nnames = data/obj.names\n"
                           "backup = backup/\n")
    put(root / "obj.names", "car\nperson\n")
    for name in ("f0", "f1"):
        yolo_pair(root / "obj_train_data" / f"{name}.jpg", None, "1 0.5 0.5 0.5 0.5\n")
    put(root / "train.txt", "data/obj_train_data/f0.jpg\ndata/obj_train_data/f1.jpg\n")
    report = convert("yolo", root, tmp_path / "out")
    assert report.classes == ["car", "person"] and report.entries == []
    got = written(tmp_path / "out", report)
    assert got["obj_train_data/f0.jpg"] == (20, 40, [("person", (10, 5, 30, 15))])


def roboflow_yolo(root: Path, yaml_paths: dict[str, str]) -> None:
    for split in ("train", "valid", "test"):
        for i in range(2):
            yolo_pair(root / split / "images" / f"{split}{i}_jpg.rf.ab12.jpg",
                      root / split / "labels", "0 0.25 0.5 0.5 1\n")
    put(root / "data.yaml", "".join(f"{k}: {v}\n" for k, v in yaml_paths.items())
        + "\nnc: 1\nnames: ['coin']\n\nroboflow:\n  workspace: me\n  version: 1\n")


def test_roboflow_yolo_export(tmp_path: Path) -> None:
    root = tmp_path / "rf"
    roboflow_yolo(root, {"train": "../train/images", "val": "../valid/images",
                         "test": "../test/images"})
    report = convert("yolo", tmp_path, tmp_path / "out")  # data.yaml one folder down
    assert {k: s.num_images for k, s in report.splits.items()} == {"train": 2, "val": 2,
                                                                   "test": 2}
    assert report.entries == []  # Roboflow's ../ is taken from the dataset root
    got = written(tmp_path / "out", report, "val")
    assert got["valid/images/valid0_jpg.rf.ab12.jpg"] == (20, 40, [("coin", (0, 0, 20, 20))])


def test_data_yaml_with_absolute_paths(tmp_path: Path) -> None:
    root = tmp_path / "rf"
    roboflow_yolo(root, {"path": str(root), "train": str(root / "train" / "images"),
                         "val": str(root / "valid" / "images")})
    report = convert("yolo", root / "data.yaml", tmp_path / "out")
    assert {k: s.num_images for k, s in report.splits.items()} == {"train": 2, "val": 2}
    assert report.entries == []
    # the same file written on another machine (Colab): found by the paths' trailing parts
    put(root / "data.yaml", "train: /content/datasets/rf/train/images\n"
                            "val: /content/datasets/rf/valid/images\nnames: [coin]\n")
    moved = convert("yolo", root, tmp_path / "out2")
    assert {k: s.num_images for k, s in moved.splits.items()} == {"train": 2, "val": 2}
    assert reasons(moved) == [("data.yaml", "note", "absolute split path not found: found "
                                                    "under the dataset root")] * 2


def test_yolo_flat_folder_names_from_classes_txt_or_ids(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    yolo_pair(root / "a.jpg", None, "1 0.5 0.5 0.5 0.5\n")
    yolo_pair(root / "b.jpg", None, "0 0.5 0.5 0.25 0.5\n")
    report = convert("yolo", root, tmp_path / "out")
    assert report.classes == ["class_0", "class_1"]
    assert [e.reason for e in report.entries] == [
        "no class names (data.yaml names, obj.names, classes.txt): classes named class_<id>; "
        "pass classes=[...] to name them"]
    named = convert("yolo", root, tmp_path / "out", classes=["apple", "pear"])
    assert written(tmp_path / "out", named)["a.jpg"][2] == [("pear", (10, 5, 30, 15))]
    put(root / "classes.txt", "cat\ndog\n")  # labelImg's YOLO mode writes it
    report = convert("yolo", root, tmp_path / "out")
    assert report.classes == ["cat", "dog"] and report.entries == []


def test_yolo_images_and_labels_folders_split_by_folder_name(tmp_path: Path) -> None:
    root = tmp_path / "ul"
    for split in ("train", "val"):
        for i in range(2):
            yolo_pair(root / "images" / split / f"{i}.jpg", root / "labels" / split,
                      "0 0.5 0.5 0.5 0.5\n")
    report = convert("yolo", root, tmp_path / "out", classes=["fish"])
    assert {k: s.num_images for k, s in report.splits.items()} == {"train": 2, "val": 2}
    assert sorted(written(tmp_path / "out", report, "train")) == ["images/train/0.jpg",
                                                                  "images/train/1.jpg"]


def test_yolo_img_dir_labels_found_by_stem(tmp_path: Path) -> None:
    for name in ("a", "b"):
        put(tmp_path / "photos" / "day1" / f"{name}.jpg", jpeg(20, 40))
        put(tmp_path / "labels_export" / f"{name}.txt", "0 0.5 0.5 0.5 0.5\n")
    put(tmp_path / "labels_export" / "classes.txt", "bird\n")
    report = convert("yolo", tmp_path / "labels_export", tmp_path / "out",
                     img_dir=tmp_path / "photos")
    assert report.entries == [] and report.classes == ["bird"]
    assert written(tmp_path / "out", report)["day1/b.jpg"] == (20, 40, [("bird", (10, 5, 30, 15))])


def test_yolo_broken_images_skipped_by_name(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    yolo_pair(root / "a.jpg", None, "0 0.5 0.5 0.5 0.5\n")
    (root / "a.jpg").write_bytes(truncated_jpeg())
    yolo_pair(root / "b.jpg", None, "0 0.5 0.5 0.5 0.5\n")
    put(root / "classes.txt", "x\n")
    report = convert("yolo", root, tmp_path / "out")
    assert reasons(report) == [("a.jpg", "skipped", "truncated image")]
    assert report.splits["all"].num_images == 1


# --- labelme --------------------------------------------------------------------------------


def labelme(path: Path, image_path: str, h: int, w: int, image_data: str | None) -> None:
    shape = {"label": "cat", "points": [[2, 3], [12, 13]], "group_id": None,
             "shape_type": "rectangle", "flags": {}}
    put(path, json.dumps({"version": "5.5.0", "flags": {}, "shapes": [shape],
                          "imagePath": image_path, "imageData": image_data,
                          "imageHeight": h, "imageWidth": w}))


def test_labelme_embedded_image_data_is_written_out(tmp_path: Path) -> None:
    root = tmp_path / "lm"
    labelme(root / "sub" / "a.json", "a.jpg", 20, 30,
            base64.b64encode(jpeg(20, 30)).decode())  # labelme's default: image in the JSON
    report = convert("labelme", root, tmp_path / "out")
    assert report.entries == []
    assert (tmp_path / "out" / "images" / "sub" / "a.jpg").is_file()
    assert report.img_dir == str(tmp_path / "out" / "images")
    assert written(tmp_path / "out", report) == {"sub/a.jpg": (20, 30, [("cat", (2, 3, 12, 13))])}
    again = convert("labelme", root, tmp_path / "out")  # a rerun gives the same
    assert again.entries == [] and again.img_dir == report.img_dir


def test_labelme_images_beside_or_by_relative_image_path(tmp_path: Path) -> None:
    root = tmp_path / "lm"
    put(root / "a.jpg", jpeg(20, 30))
    labelme(root / "a.json", "a.jpg", 20, 30, None)
    put(root / "images" / "b.jpg", jpeg(20, 30))
    labelme(root / "json" / "b.json", "../images/b.jpg", 20, 30, None)
    put(root / "pics" / "c.jpg", jpeg(25, 30))  # imagePath is stale: found by name, resized
    labelme(root / "json" / "c.json", "C:\\labelling\\c.jpg", 20, 30, None)
    report = convert("labelme", root, tmp_path / "out")
    assert sorted(written(tmp_path / "out", report)) == ["a.jpg", "images/b.jpg", "pics/c.jpg"]
    elsewhere = convert("labelme", root / "json", tmp_path / "out2", img_dir=root / "pics")
    assert sorted(written(tmp_path / "out2", elsewhere)) == ["c.jpg"]
    assert [e.reason for e in elsewhere.entries if e.action == "skipped"] == [
        "image file not found"]  # b.json: not under img_dir, no imageData
    assert reasons(report) == [("json/c.json", "corrected",
                                "imageHeight/imageWidth differ from the image: image's used")]
