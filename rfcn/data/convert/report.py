"""What a conversion did: the files it wrote and every record it changed or left out.

Each dropped, clipped or otherwise changed box and each skipped file is one `ReportEntry`
naming the source file; `ConversionReport` gathers them with the written splits, writes
``convert_report.json`` and renders the summary the tool prints.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ConversionReport", "ReportEntry", "SplitSummary", "no_usable_image_message"]

# Entry actions: what happened to the record.
DROPPED = "dropped"  # a box (object, shape, label line) is not in the output
CLIPPED = "clipped"  # a box reached outside the image and was cut to it
SKIPPED = "skipped"  # a whole file (annotation or image) is not in the output
CORRECTED = "corrected"  # a value was fixed (e.g. a size that disagrees with the image)
NOTE = "note"  # nothing lost, but worth knowing (e.g. an image without a label file)

# Reasons the failure message gives advice for.
IMAGE_NOT_FOUND = "image file not found"
SPLIT_NOT_FOUND = "split path not found"
TRUNCATED_IMAGE = "truncated image"
UNREADABLE_IMAGE = "unreadable image"

_MAX_LISTED = 20  # entries listed one by one in the printed summary
_MAX_SKIPPED = 5  # skipped files named one by one before the other entries
_HINTS = {  # reason -> what to do about it, in the "no usable image" message
    IMAGE_NOT_FOUND: "pass img_dir=DIR to say where the images are",
    SPLIT_NOT_FOUND: "check path:, train: and val: in the data.yaml (relative to path:, "
                     "else to the yaml's folder), or pass input=FOLDER of images and labels",
    UNREADABLE_IMAGE: "the images do not decode: re-export or replace them",
    TRUNCATED_IMAGE: "the images are cut short (an interrupted copy or download?): copy "
                       "them again",
    "not a VOC annotation": "these .xml files are not VOC annotations: is from=voc right?",
    "not a labelme file (no 'shapes' list)": "these .json files are not labelme files: is "
                                             "from=labelme right?",
}
_HYDRA_PLAIN = re.compile(r"[\w/.\-+~@%:]*")  # a value Hydra's override grammar takes unquoted


def _hydra_value(value: str) -> str:
    """``value`` as a Hydra override value: quoted when it holds spaces, commas, brackets..."""
    if _HYDRA_PLAIN.fullmatch(value):
        return value
    # Hydra unescapes backslashes only where they precede a quote or end the quoted string
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


@dataclass(frozen=True)
class ReportEntry:
    """One record the conversion changed or left out.

    Attributes:
        file: the source file the record came from (annotation file, or image).
        action: ``dropped``, ``clipped``, ``skipped``, ``corrected`` or ``note``.
        reason: why, in a few words that are the same for every record of the kind.
        detail: which record and the specifics (``object 2 'dog'``, ``line 3``).
    """

    file: str
    action: str
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        where = f"{self.file}: {self.detail}" if self.detail else self.file
        return f"{where}: {self.action} ({self.reason})"


@dataclass(frozen=True)
class SplitSummary:
    """One written COCO file."""

    ann_file: str
    num_images: int
    num_annotations: int


@dataclass
class ConversionReport:
    """The result of `rfcn.data.convert.convert`.

    Attributes:
        source_format: ``voc``, ``yolo`` or ``labelme``.
        input: the converted input, absolute.
        output: the output directory, absolute.
        img_dir: the directory every ``file_name`` of the written files is relative to (use it
            as ``dataset.train.img_dir`` and ``dataset.val.img_dir``).
        classes: category names; category id ``k`` is ``classes[k - 1]``.
        splits: split name (``all``, ``train``, ``val``, ``test``) -> the file written for it.
        entries: every record changed or left out, in reading order.
    """

    source_format: str
    input: str
    output: str
    img_dir: str = ""
    classes: list[str] = field(default_factory=list)
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    entries: list[ReportEntry] = field(default_factory=list)

    def add(self, file: str, action: str, reason: str, detail: str = "") -> None:
        self.entries.append(ReportEntry(file, action, reason, detail))

    def counts(self) -> dict[str, int]:
        """``"<action>: <reason>"`` -> number of entries, sorted by key."""
        counter = Counter(f"{e.action}: {e.reason}" for e in self.entries)
        return dict(sorted(counter.items()))

    def train_command(self) -> str:
        """The ``tools/train.py`` line that trains on the written files."""
        first = next(iter(self.splits.values()))
        train = (self.splits.get("train") or self.splits.get("all") or first).ann_file
        val = self.splits.get("val")
        val_file = val.ann_file if val is not None else train
        keys = {"dataset.train.ann_file": train, "dataset.train.img_dir": self.img_dir,
                "dataset.val.ann_file": val_file, "dataset.val.img_dir": self.img_dir}
        args = ["python", "tools/train.py", "dataset=coco_json",
                *(f"{k}={_hydra_value(v)}" for k, v in keys.items())]
        return shlex.join(args)

    def to_dict(self) -> dict[str, Any]:
        """The content of ``convert_report.json``."""
        return {
            "format": self.source_format,
            "input": self.input,
            "output": self.output,
            "img_dir": self.img_dir,
            "classes": list(self.classes),
            "splits": {k: asdict(v) for k, v in self.splits.items()},
            "counts": self.counts(),
            "entries": [asdict(e) for e in self.entries],
            "train_command": self.train_command() if self.splits else None,
        }

    def summary_lines(self) -> list[str]:
        """A human summary: what was written, what was lost and why, how to train on it."""
        lines = [f"converted {self.source_format} {self.input} -> {self.output}",
                 f"  {len(self.classes)} classes: {', '.join(self.classes)}"]
        for name, split in self.splits.items():
            lines.append(f"  {name}: {split.num_images} images, {split.num_annotations} "
                         f"boxes -> {split.ann_file}")
        lines.append(f"  image root (file_name is relative to it): {self.img_dir}")
        lines += self._skipped_lines()
        others = [e for e in self.entries if e.action != SKIPPED]
        if others:
            lines.append(f"  {len(self.entries)} records changed or left out "
                         f"(all listed in {self.report_file()}):")
            lines += [f"    {n} {key}" for key, n in self.counts().items()]
            lines += [f"    {e}" for e in others[:_MAX_LISTED]]
            if len(others) > _MAX_LISTED:
                lines.append(f"    ... and {len(others) - _MAX_LISTED} more, see "
                             f"{self.report_file()}")
        if self.splits:
            if "val" not in self.splits:
                lines.append("  no val split: the line below evaluates on the training images; "
                             "pass val_fraction=0.2 for a held-out set")
            lines += ["train with:", f"  {self.train_command()}"]
        return lines

    def report_file(self) -> str:
        """Where `convert` writes this report."""
        return f"{self.output}/convert_report.json"

    def _skipped_lines(self) -> list[str]:
        """How many files were left out and why, naming the first few."""
        skipped = [e for e in self.entries if e.action == SKIPPED]
        if not skipped:
            return []
        why = Counter(e.reason for e in skipped)
        lines = [f"  {len(skipped)} files skipped (not in the output): "
                 + ", ".join(f"{n} {reason}" for reason, n in sorted(why.items()))]
        lines += [f"    {e}" for e in skipped[:_MAX_SKIPPED]]
        if len(skipped) > _MAX_SKIPPED:
            lines.append(f"    ... and {len(skipped) - _MAX_SKIPPED} more, see "
                         f"{self.report_file()}")
        return lines


def no_usable_image_message(report: ConversionReport, limit: int = _MAX_SKIPPED) -> str:
    """Why a conversion found no image to write: the first ``limit`` entries (skipped files
    first) and what to do."""
    entries = sorted(report.entries, key=lambda e: e.action != SKIPPED)  # stable
    lines = [f"{report.input}: no usable image ({len(entries)} problems, all in "
             f"{report.report_file()})" + (f"; the first {min(limit, len(entries))}:"
                                            if entries else "")]
    lines += [f"  {e}" for e in entries[:limit]]
    if len(entries) > limit:
        lines.append(f"  ... and {len(entries) - limit} more")
    reasons = dict.fromkeys(e.reason for e in entries)
    hints = [_HINTS[r] for r in reasons if r in _HINTS]
    if not report.entries:
        hints.append("no image was found: check input=, or pass img_dir=DIR to say where "
                     "the images are")
    lines += [f"hint: {h}" for h in hints]
    return "\n".join(lines)
