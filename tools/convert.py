"""Convert a VOC-XML, YOLO-txt or labelme dataset into COCO JSON for ``dataset=coco_json``.

python tools/convert.py from=voc|yolo|labelme input=PATH output=DIR [img_dir=DIR]
    [val_fraction=0.2 seed=0] [classes=[cat,dog]]      (--help lists the keys)
# -> DIR/annotations.json (or DIR/train.json + DIR/val.json), DIR/convert_report.json, and the
#    tools/train.py line that trains on them
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from rfcn.data.convert import FORMATS, convert

_USAGE = ("usage: python tools/convert.py from=voc|yolo|labelme input=PATH output=DIR "
          "[img_dir=DIR] [val_fraction=0.2] (--help lists every key)")
_MISSING = {"from": f"from={'|'.join(FORMATS)}", "input": "input=PATH", "output": "output=DIR"}


@hydra.main(version_base="1.3", config_path="../configs", config_name="convert")
def main(cfg: DictConfig) -> None:
    missing = [k for k in ("from", "input", "output") if OmegaConf.is_missing(cfg, k)]
    if missing:
        print(f"error: missing {', '.join(_MISSING[k] for k in missing)}\n{_USAGE}",
              file=sys.stderr)
        sys.exit(1)
    classes = cfg.classes
    if classes is not None and not OmegaConf.is_list(classes):
        print(f"error: classes must be a list like classes=[cat,dog], got {classes!r}",
              file=sys.stderr)
        sys.exit(1)
    try:
        report = convert(
            cfg["from"],  # `from` is a Python keyword
            cfg.input,
            cfg.output,
            classes=None if classes is None else [str(c) for c in classes],
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            img_dir=cfg.img_dir,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print("\n".join(report.summary_lines()))


if __name__ == "__main__":
    main()
