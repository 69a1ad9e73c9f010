from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from rfcn.data import VOC_CLASSES, ConcatDetection, VOCDetection


def test_boxes_are_zero_based_and_difficult_kept(voc_devkit: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="rfcn.data"):
        ds = VOCDetection(voc_devkit, "2007", "trainval")
    assert ds.class_names == ["__background__", *VOC_CLASSES]
    assert ds.label_to_cat_id == {k: k for k in range(1, 21)}
    assert ds.image_names == ["000001", "000002", "000003"]
    assert ds.image_ids == [1, 2, 3]
    t = ds.get_annotation(0)
    assert t["orig_size"] == (40, 50)
    torch.testing.assert_close(t["boxes"], torch.tensor([[10.0, 5, 30, 25], [0, 0, 10, 10]]))
    assert t["labels"].tolist() == [VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("cat") + 1]
    assert t["difficult"].tolist() == [False, True]
    assert t["iscrowd"].tolist() == [False, False]
    assert ds.aspect_ratios == pytest.approx([50 / 40, 0.5, 1.0])

    t2 = ds.get_annotation(1)  # unknown class dropped, box clipped, negative width dropped
    assert t2["boxes"].tolist() == [[4.0, 4.0, 30.0, 60.0]]
    assert ds.get_annotation(2)["boxes"].shape == (0, 4)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    for text in ("1 objects of unknown classes dropped", "1 boxes reaching outside the image",
                 "1 boxes with zero or negative size", "1 objects with a missing or malformed"):
        assert text in warnings[0], text
    assert ds.num_bad_records == 4

    img, target = ds[0]
    assert img.shape == (3, 40, 50) and img.dtype == torch.float32
    assert ds.image_path(0).endswith("VOC2007/JPEGImages/000001.jpg")


def test_custom_classes_and_direct_layout(voc_devkit: Path) -> None:
    ds = VOCDetection(voc_devkit / "VOC2007", class_names=["cat", "dog"])
    assert ds.class_names == ["__background__", "cat", "dog"]
    t = ds.get_annotation(0)
    assert t["labels"].tolist() == [2, 1]
    assert ds.get_annotation(1)["labels"].tolist() == []  # person is not a class here


def test_concat_07_12(voc_devkit: Path) -> None:
    ds07 = VOCDetection(voc_devkit, "2007")
    ds12 = VOCDetection(voc_devkit, "2012")
    both = ConcatDetection([ds07, ds12])
    assert len(both) == 4
    assert both.image_ids == [1, 2, 3, 2008000001]
    assert both.class_names == ds07.class_names
    assert both.aspect_ratios[-1] == pytest.approx(40 / 30)
    assert both.get_annotation(3)["boxes"].tolist() == [[1.0, 2.0, 20.0, 25.0]]
    assert both.image_path(3).endswith("2008_000001.jpg")
    img, _ = both[3]
    assert img.shape == (3, 30, 40)
    with pytest.raises(IndexError):
        both.get_annotation(4)
    custom = VOCDetection(voc_devkit, "2012", class_names=["bus"])
    with pytest.raises(ValueError, match="classes"):
        ConcatDetection([ds07, custom])
    with pytest.raises(ValueError, match="share image ids"):
        ConcatDetection([ds07, ds07])


def test_malformed_xml_names_file(voc_devkit: Path) -> None:
    base = voc_devkit / "VOC2007"
    (base / "Annotations" / "000002.xml").write_text("<annotation><size><width>3</wid")
    with pytest.raises(ValueError, match="malformed XML") as info:
        VOCDetection(voc_devkit)
    assert "000002.xml" in str(info.value)


def test_missing_size_names_file(voc_devkit: Path) -> None:
    base = voc_devkit / "VOC2007"
    (base / "Annotations" / "000003.xml").write_text(
        "<annotation><size><height>3</height></size></annotation>")
    with pytest.raises(ValueError, match=r"000003.xml: missing <size/width>"):
        VOCDetection(voc_devkit)


def test_missing_files_name_them(voc_devkit: Path, tmp_path: Path) -> None:
    (voc_devkit / "VOC2007" / "Annotations" / "000001.xml").unlink()
    with pytest.raises(ValueError, match="000001.xml"):
        VOCDetection(voc_devkit)
    with pytest.raises(ValueError, match="test.txt"):
        VOCDetection(voc_devkit, image_set="test")
    with pytest.raises(ValueError, match="VOC2007"):
        VOCDetection(tmp_path / "nowhere")
