"""Where the images of a YOLO dataset are, how they split, and what its classes are called.

Three ways a YOLO dataset arrives, tried in this order:

- a dataset YAML (Ultralytics, Roboflow): ``input`` is the YAML, or a folder holding
  ``data.yaml`` (or its only ``*.yaml``; else one ``data.yaml`` a few folders down). Keys:
  ``path`` (dataset root; relative to the YAML's folder, default that folder), ``train``,
  ``val``, optional ``test`` (each a folder of images, a ``.txt`` list of image paths, or a list
  of those; relative to ``path``, else to the YAML's folder), ``names`` (a list or an
  ``{id: name}`` mapping; without it ``nc`` gives ``class_0``...).
- a darknet ``obj.data`` (CVAT's "YOLO 1.1" export: ``obj.names``, ``train.txt``,
  ``obj_train_data/``): ``train``/``valid`` list files and the ``names`` file.
- a plain folder (labelImg's YOLO mode, ``images/`` + ``labels/``, Roboflow folders without
  their YAML): every image under it; split by folder names (``train``, ``val``/``valid``,
  ``test``) when every image lies in one; class names from ``obj.names``, ``classes.txt``,
  ``_darknet.labels`` or a ``*.names`` file, else ``class_<id>`` (or the ``classes`` given).

A path that does not exist as written is looked for by its trailing parts under the dataset
root: Roboflow's ``../train/images``, CVAT's ``data/obj_train_data/x.jpg`` and absolute paths
from the machine the set was made on all resolve. With ``img_dir``, the images are every image
under it (split by folder names), the names as above.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rfcn.data.convert.report import NOTE, SKIPPED, SPLIT_NOT_FOUND, ConversionReport
from rfcn.data.convert.sources import IMAGE_EXTENSIONS, ReadOptions, display_path, find_files

__all__ = ["YoloLayout", "find_layout", "resolve_path"]

logger = logging.getLogger(__name__)

_SPLITS = ("train", "val", "test")
_FOLDER_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}
_NAMES_FILES = ("obj.names", "classes.txt", "classes.names", "_darknet.labels")
_CONFIG_NAMES = ("data.yaml", "data.yml", "obj.data")
_CONFIG_DEPTH = 2  # how deep a data.yaml / obj.data is looked for below the input


@dataclass
class YoloLayout:
    """What `find_layout` found.

    Attributes:
        splits: ``train``/``val``/``test`` -> image paths, or ``all`` (and maybe ``test``).
        root: the dataset root: report paths are relative to it, ``file_name`` too if it can.
        names: class id -> name; None when the dataset names no class.
    """

    splits: dict[str, list[Path]]
    root: Path
    names: dict[int, str] | None


def resolve_path(entry: str, bases: list[Path]) -> tuple[Path | None, bool]:
    """(the existing path ``entry`` means, whether it is an absolute path found by its trailing
    parts only: a dataset moved from another machine; Roboflow's ``../`` and CVAT's ``data/``
    prefixes are conventions, not moves)."""
    p = Path(os.path.expanduser(entry.strip().replace("\\", "/")))
    direct = [p] if p.is_absolute() else [b / p for b in bases]
    for c in direct:
        if c.exists():
            return Path(os.path.abspath(c)), False
    parts = [s for s in p.parts if s not in (p.anchor, "..", ".")]
    # never match on one generic folder name ("images") alone; a file name is specific enough
    shortest = 1 if parts and Path(parts[-1]).suffix else min(2, len(parts))
    for k in range(len(parts) - shortest + 1 if parts else 0):
        for b in bases:
            c = b.joinpath(*parts[k:])
            if c.exists():
                return Path(os.path.abspath(c)), p.is_absolute()
    return None, False


def find_layout(input: Path, report: ConversionReport, options: ReadOptions) -> YoloLayout:
    """The layout of the dataset at ``input`` (a YAML, an ``obj.data`` or a folder).

    Raises:
        ValueError: nothing YOLO-like at ``input``, an unreadable config, no ``train`` entry.
    """
    config = _find_config(input, options.output)
    names: dict[int, str] | None = None
    if config is not None and config.suffix == ".data":
        layout = _from_obj_data(config, report)
    elif config is not None:
        layout = _from_yaml(config, report)
    else:
        layout = None
    if layout is not None:
        names = layout.names
    if options.img_dir is not None or layout is None:
        base = options.img_dir if options.img_dir is not None else input
        folder = _from_folder(base, input, options.output)
        if names is None:
            names = folder.names
        layout = YoloLayout(folder.splits, folder.root, names)
    if not any(layout.splits.values()) and config is None and options.img_dir is None:
        raise ValueError(f"{input}: no data.yaml, obj.data or image found (expected data.yaml, "
                         "a CVAT/darknet export with obj.data, or a folder of images with "
                         "their .txt labels)")
    return layout


def _find_config(input: Path, exclude: Path | None) -> Path | None:
    if input.is_file():
        return input
    if not input.is_dir():
        raise ValueError(f"{input}: no such file or directory (expected a YOLO data.yaml)")
    for name in _CONFIG_NAMES:
        if (input / name).is_file():
            return input / name
    found = sorted([*input.glob("*.yaml"), *input.glob("*.yml")])
    if len(found) > 1:
        raise ValueError(f"{input}: expected data.yaml or exactly one .yaml file, found "
                         f"{[f.name for f in found]}")
    if found:
        return found[0]
    deeper = [f for f in find_files(input, (".yaml", ".yml", ".data"), exclude, _CONFIG_DEPTH)
              if f.name in _CONFIG_NAMES]
    return deeper[0] if len(deeper) == 1 else None


def _load_yaml(yaml_file: Path) -> dict[str, Any]:
    try:
        with open(yaml_file, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ValueError(f"{yaml_file}: cannot read ({e.strerror or e})") from e
    except yaml.YAMLError as e:
        raise ValueError(f"{yaml_file}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{yaml_file}: expected a mapping with train/val/names keys")
    return data


def _yaml_names(data: dict[str, Any], yaml_file: Path) -> dict[int, str]:
    names = data.get("names")
    if names is None and isinstance(data.get("nc"), int):
        names = [f"class_{i}" for i in range(data["nc"])]
    if isinstance(names, list):
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, dict):
        try:
            return {int(k): str(v) for k, v in sorted(names.items(), key=lambda kv: int(kv[0]))}
        except (TypeError, ValueError):
            raise ValueError(f"{yaml_file}: 'names' keys must be integer class ids") from None
    raise ValueError(f"{yaml_file}: 'names' must be a list or an {{id: name}} mapping")


def _from_yaml(yaml_file: Path, report: ConversionReport) -> YoloLayout:
    yaml_file = Path(os.path.abspath(yaml_file))
    data = _load_yaml(yaml_file)
    names = _yaml_names(data, yaml_file)
    yaml_dir = yaml_file.parent
    root = Path(os.path.expanduser(str(data.get("path") or ".")))
    root = Path(os.path.abspath(root if root.is_absolute() else yaml_dir / root))
    if not root.is_dir():
        logger.warning("%s: path %s is not a directory; paths are taken relative to %s",
                       yaml_file, root, yaml_dir)
        root = yaml_dir
    if not data.get("train"):
        raise ValueError(f"{yaml_file}: no 'train' entry")
    splits = {key: _split_images(data[key], [root, yaml_dir], root, yaml_file.name, report)
              for key in _SPLITS if data.get(key)}
    return YoloLayout(_settle(splits), root, names)


def _from_obj_data(obj_data: Path, report: ConversionReport) -> YoloLayout:
    """CVAT / darknet: ``train = data/train.txt``, ``valid = ...``, ``names = data/obj.names``."""
    obj_data = Path(os.path.abspath(obj_data))
    root = obj_data.parent
    try:
        lines = obj_data.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{obj_data}: cannot read ({e})") from e
    keys = {k.strip(): v.strip() for k, _, v in (ln.partition("=") for ln in lines) if v.strip()}
    if not keys.get("train"):
        raise ValueError(f"{obj_data}: no 'train' entry")
    names = None
    if keys.get("names"):
        names_file, _ = resolve_path(keys["names"], [root])
        names = _read_names(names_file) if names_file is not None else None
    splits = {split: _split_images(keys[key], [root], root, obj_data.name, report)
              for key, split in (("train", "train"), ("valid", "val"), ("test", "test"))
              if keys.get(key)}
    return YoloLayout(_settle(splits), root, names)


def _settle(splits: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """With a train split and no val one, the train images are the whole set."""
    if "val" not in splits and "train" in splits:
        splits = {"all": splits.pop("train"), **splits}
    return splits


def _split_images(entry: Any, bases: list[Path], root: Path, shown_config: str,
                  report: ConversionReport) -> list[Path]:
    """The image paths of one split entry (folder, list file, image, or a list of those)."""
    images: list[Path] = []
    for e in entry if isinstance(entry, list) else [entry]:
        p, moved = resolve_path(str(e), bases)
        if p is None:
            report.add(shown_config, SKIPPED, SPLIT_NOT_FOUND, str(e))
            continue
        if moved:
            report.add(shown_config, NOTE, "absolute split path not found: found under the "
                       "dataset root", f"{e} -> {display_path(p, root)}")
        if p.is_dir():
            images += find_files(p, IMAGE_EXTENSIONS)
        elif p.suffix.lower() == ".txt":
            images += _list_file(p, root, report)
        else:
            images.append(p)
    return list(dict.fromkeys(images))


def _list_file(list_file: Path, root: Path, report: ConversionReport) -> list[Path]:
    shown = display_path(list_file, root)
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        report.add(shown, SKIPPED, "unreadable image list", str(e))
        return []
    images = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p, _ = resolve_path(line, [list_file.parent, root])
        if p is None or not p.is_file():
            report.add(shown, SKIPPED, "image file not found", f"line {n}: {line}")
        else:
            images.append(p)
    return images


def _read_names(names_file: Path) -> dict[int, str] | None:
    try:
        lines = names_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    names = [ln.strip() for ln in lines if ln.strip()]
    return dict(enumerate(names)) if names else None


def _folder_split(rel: Path) -> str | None:
    for part in rel.parent.parts:
        key = part.lower()
        cvat = re.fullmatch(r"obj_(\w+)_data", key)  # CVAT: obj_train_data, obj_valid_data
        key = cvat.group(1) if cvat else key
        if key in _FOLDER_SPLITS:
            return _FOLDER_SPLITS[key]
    return None


def _from_folder(images_root: Path, input: Path, exclude: Path | None) -> YoloLayout:
    """Every image under ``images_root``; splits by folder names; names from a names file."""
    images = find_files(images_root, IMAGE_EXTENSIONS, exclude)
    by_split: dict[str, list[Path]] = {}
    for p in images:
        by_split.setdefault(_folder_split(p.relative_to(images_root)) or "", []).append(p)
    if "" in by_split or "train" not in by_split:  # not every image in a split folder
        splits = {"all": images}
    else:
        splits = by_split if "val" in by_split else _settle(by_split)
    names_files = sorted(find_files(input, (".names", ".txt", ".labels"), exclude,
                                    _CONFIG_DEPTH), key=lambda f: (len(f.parts), str(f)))
    names = None
    for f in [f for f in names_files if f.name in _NAMES_FILES] + \
             [f for f in names_files if f.suffix == ".names"]:
        if (names := _read_names(f)) is not None:
            break
    return YoloLayout(splits, images_root, names)
