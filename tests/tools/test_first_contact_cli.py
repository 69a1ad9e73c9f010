"""Issue 20's table, row by row, through the command lines a user types: each mistake is one
line `error: <key>: <problem>` (no traceback), each tool's --help is its own, the printed
tables say their units, infer says what fell below its threshold, export keeps its log out
of the current folder."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.tools.conftest import run_tool


def _one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 1, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _coco_json(folder: Path, names: list[str]) -> Path:
    images = [{"id": i + 1, "file_name": n, "height": 64, "width": 80}
              for i, n in enumerate(names)]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [5, 5, 30, 20],
             "area": 600, "iscrowd": 0} for i in range(len(names))]
    path = folder / "train.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "cell"}]}))
    return path


def _coco_json_keys(ann: Path, img_dir: Path) -> list[str]:
    return [f"dataset.{s}.{k}={v}" for s in ("train", "val")
            for k, v in (("ann_file", ann), ("img_dir", img_dir))]


def test_an_added_key_the_schema_lacks_is_refused_like_a_misspelt_one(tmp_path: Path) -> None:
    proc = run_tool("train.py", f"hydra.run.dir={tmp_path / 'run'}", "+train.max_iters=40",
                    cwd=tmp_path)
    _one_line_error(proc, "train.max_iters", "did you mean train.max_iter?")


def test_a_typo_in_an_annotation_path_names_the_key(tmp_path: Path) -> None:
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    keys = _coco_json_keys(tmp_path / "trian.json", img_dir)
    proc = run_tool("train.py", f"hydra.run.dir={tmp_path / 'run'}", "dataset=coco_json",
                    *keys, cwd=tmp_path)
    _one_line_error(proc, "dataset.train.ann_file", "trian.json", "no such file")


def test_an_empty_image_folder_is_caught_before_iteration_0(tmp_path: Path) -> None:
    ann = _coco_json(tmp_path, ["a.jpg", "b.jpg"])
    empty = tmp_path / "images"
    empty.mkdir()
    proc = run_tool("train.py", f"hydra.run.dir={tmp_path / 'run'}", "dataset=coco_json",
                    *_coco_json_keys(ann, empty), cwd=tmp_path)
    _one_line_error(proc, "dataset.train.img_dir", "none of the images")
    assert "iter 1/" not in proc.stderr


def test_browse_names_a_truncated_jpeg_and_a_text_file_named_jpg(tmp_path: Path) -> None:
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (64, 80, 3), dtype=np.uint8))
    data = buf.tobytes()
    (img_dir / "good.jpg").write_bytes(data)
    (img_dir / "cut.jpg").write_bytes(data[: len(data) // 2])  # a camera's interrupted write
    (img_dir / "notes.jpg").write_text("this is not a photo\n")
    ann = _coco_json(tmp_path, ["good.jpg", "cut.jpg", "notes.jpg"])
    proc = run_tool("browse.py", "dataset=coco_json", *_coco_json_keys(ann, img_dir),
                    "split=train", f"output={tmp_path / 'browse'}", "n=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 of 3 cannot be used" in proc.stdout, proc.stdout
    assert "cut.jpg: truncated JPEG" in proc.stdout and "notes.jpg" in proc.stdout
    assert "training skips them" in proc.stdout
    stats = json.loads((tmp_path / "browse" / "statistics.json").read_text())
    assert {Path(p["path"]).name for p in stats["unreadable_images"]} == {"cut.jpg", "notes.jpg"}


def test_a_jpeg_given_as_checkpoint_is_called_what_it_is(tmp_path: Path) -> None:
    ok, buf = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(buf.tobytes())
    proc = run_tool("eval.py", f"checkpoint={photo}", f"hydra.run.dir={tmp_path / 'e'}",
                    cwd=tmp_path)
    line = _one_line_error(proc, "not a checkpoint", "JPEG image")
    assert "pickled" not in line  # not a security alarm for a wrong file


@pytest.mark.parametrize("tool,own,foreign", [
    ("train.py", ["max_iter:", "model=rfcn_r18|rfcn_r50|rfcn_r101"], []),
    ("eval.py", ["checkpoint:", "num_threads:", "test.box_nms="], ["solver"]),
    ("infer.py", ["score_thresh:", "runtime=torch|onnxruntime|pt2", "num_threads:"],
     ["solver", "dataset"]),
    ("export.py", ["format=onnx|pt2", "output:", "num_threads:"], ["solver", "dataset"]),
    ("browse.py", ["split=train|val", "num_threads:"], ["solver"]),
    ("benchmark.py", ["image_size:", "num_threads:"], ["solver", "dataset"]),
])
def test_help_lists_the_tools_own_keys(tmp_path: Path, tool: str, own: list[str],
                                       foreign: list[str]) -> None:
    proc = run_tool(tool, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for text in own:
        assert text in proc.stdout, (tool, text)
    head = proc.stdout.split("Keys and their defaults")[0]
    for text in foreign:
        assert text not in head, (tool, text)
    assert "== Configuration groups ==" not in proc.stdout  # Hydra's generic page


def test_tables_infer_hint_and_export_log_place(tmp_path: Path, tiny_run: Path) -> None:
    ckpt = tiny_run / "checkpoints" / "last.pt"
    proc = run_tool("eval.py", f"checkpoint={ckpt}", f"hydra.run.dir={tmp_path / 'e'}",
                    "analysis=false", "num_workers=0", "num_threads=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fractions of 1, as in metrics.json" in proc.stdout
    images = tiny_run.parent / "cache"
    image = next(images.rglob("*.jpg"))
    proc = run_tool("infer.py", f"checkpoint={ckpt}", f"input={image}",
                    f"output={tmp_path / 'drawn'}", "score_thresh=0.999", "num_threads=1",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "drawn" / "detections.json").read_text())[0]
    if record["below_score_thresh"]:
        assert "below score_thresh=0.999" in proc.stdout, proc.stdout
    work = tmp_path / "cwd"
    work.mkdir()
    out = tmp_path / "exported" / "model.pt2"
    proc = run_tool("export.py", f"checkpoint={ckpt}", "format=pt2", f"output={out}",
                    "example_size=[96,128]", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(work.iterdir()), list(work.iterdir())  # nothing in the current folder
    assert (out.parent / "export.log").is_file()
    assert proc.stderr.count("\n") < 30, proc.stderr[-3000:]
