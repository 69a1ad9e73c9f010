"""COCO-format detection datasets: COCO itself and any custom data in COCO JSON.

Category ids map to contiguous labels 1..C in ascending id order (0 is the background);
``class_names[0] == "__background__"``. The JSON is validated on construction: structural
problems (not JSON, missing keys, wrong types) raise ``ValueError`` naming the file and what
is wrong; bad records (invalid boxes, annotations of unknown images or categories, images
with invalid sizes) are dropped or clipped, counted, and reported in one warning.

The file is parsed once into compact columns (`rfcn.data.coco_index`) and cached on disk
(`rfcn.data.index_cache`); the dataset holds no per-image Python objects. ``.coco``, the
pycocotools ``COCO`` index over the cleaned annotations that COCOeval needs, is built on first
use, without segmentations, and freed by ``release_coco()``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from typing import Any

from pycocotools.coco import COCO

from rfcn.data.coco_index import EvalAnnotations, load_coco_index, load_coco_json
from rfcn.data.interfaces import Transform
from rfcn.data.records import BadRecordCounter, RecordDataset, RecordTable

__all__ = ["CocoDetection", "build_eval_coco", "load_coco_json"]

logger = logging.getLogger(__name__)


class CocoDetection(RecordDataset):
    """A COCO-format dataset: ``ds[i] -> (Tensor[3, H, W] float32 RGB in [0, 1], target)``.

    target: boxes float32 Tensor[M, 4] xyxy pixels, labels int64 Tensor[M] in 1..C,
    image_id int, iscrowd bool Tensor[M], difficult bool Tensor[M] (an annotation's optional
    `"difficult": 1`, as VOC data converted by tools/convert.py carries it: ignored for
    training like crowd boxes; COCOeval counts it as ordinary ground truth), orig_size (h, w).
    Images without annotations are kept (they train as background).

    Args:
        img_dir: directory the ``file_name`` entries are relative to.
        ann_file: COCO-format JSON.
        transforms: ``(image HxWx3 uint8, target, rng) -> (image, target)``, see
            `rfcn.data.transforms`.
        cache_dir: where the parsed index is cached (default ``$RFCN_CACHE_DIR`` or
            ``~/.cache/rfcn/index``).
    """

    def __init__(
        self,
        img_dir: str | os.PathLike[str],
        ann_file: str | os.PathLike[str],
        transforms: Transform | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.img_dir = os.fspath(img_dir)
        self.ann_file = os.fspath(ann_file)
        self.transforms = transforms
        index = load_coco_index(self.ann_file, cache_dir)
        self._image_root = self.img_dir
        self._table: RecordTable = index.records
        self._eval_annotations: EvalAnnotations = index.eval_annotations
        self._categories: list[dict[str, Any]] = index.categories
        self.cat_id_to_label: dict[int, int] = {
            c["id"]: i + 1 for i, c in enumerate(index.categories)}
        self.label_to_cat_id: dict[int, int] = {v: k for k, v in self.cat_id_to_label.items()}
        self.class_names: list[str] = ["__background__"] + [
            str(c["name"]) for c in index.categories]
        bad = BadRecordCounter()
        for reason, n in index.bad_records.items():
            bad.add(reason, n)
        bad.warn(logger, self.ann_file)
        self.num_bad_records = bad.total()
        self.bad_records: dict[str, int] = dict(bad.counts)
        self._coco: COCO | None = None

    @property
    def coco(self) -> COCO:
        """pycocotools ``COCO`` over the cleaned annotations (for COCOeval, bbox), built on
        first use and kept until `release_coco`."""
        if self._coco is None:
            self._coco = build_eval_coco(self._table, self._eval_annotations, self._categories)
        return self._coco

    def release_coco(self) -> None:
        """Free the evaluation index (``.coco`` builds it again when next used)."""
        self._coco = None

    def __getstate__(self) -> dict[str, Any]:
        # Spawned loader workers get the columns, never the evaluation index.
        return {**self.__dict__, "_coco": None}

    def __repr__(self) -> str:
        return (f"CocoDetection(ann_file={self.ann_file!r}, images={len(self)}, "
                f"classes={len(self.class_names) - 1})")


def build_eval_coco(
    records: RecordTable, annotations: EvalAnnotations, categories: list[dict[str, Any]]
) -> COCO:
    """A pycocotools COCO of the images (id, file_name, width, height), the cleaned
    annotations (id, image_id, category_id, bbox, area, iscrowd: no segmentation) and the
    categories, ready for ``COCOeval(..., iouType="bbox")``."""
    images = [{"id": i, "file_name": n, "width": w, "height": h}
              for i, n, w, h in zip(records.image_ids.tolist(), records.names(),
                                    records.widths.tolist(), records.heights.tolist(),
                                    strict=True)]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations.to_dicts(),
                    "categories": [dict(c) for c in categories]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco
