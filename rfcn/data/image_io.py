"""Reading images from disk with OpenCV as HxWx3 uint8 RGB.

Everything a detection dataset meets in the wild loads the same way: grayscale, gray+alpha,
RGBA, 16-bit and float images become 3-channel 8-bit RGB. A file that is missing, empty,
truncated or not an image raises ``ValueError`` naming the file; callers decide whether that
is fatal (direct loading) or a skipped sample (the training loader).

EXIF orientation is not applied (``cv2.IMREAD_UNCHANGED``): annotation files such as COCO's
give box coordinates and sizes in stored-pixel order, as pycocotools and torchvision read them.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

__all__ = ["IMAGE_SUFFIXES", "list_images", "read_image_rgb", "to_tensor"]

# The one list of image suffixes (lower case), as YOLO tooling lists them; OpenCV reads all
# but .heic, which read_image_rgb then reports by name.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dng", ".mpo",
                  ".pfm", ".heic")

_JPEG_SOI = b"\xff\xd8"
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"


def _jpeg_truncated(data: bytes) -> bool:
    # libjpeg decodes a truncated file into a half-grey image with only a stderr warning, so
    # check the markers: the last scan (SOS) must be followed by an end-of-image marker.
    # Entropy-coded data cannot contain 0xFFD9 (0xFF is byte-stuffed), and an EXIF thumbnail's
    # EOI lies before the main image's scans, so the test has no false positives.
    return data.rfind(_JPEG_EOI) < data.rfind(_JPEG_SOS)


def _to_uint8_rgb(img: np.ndarray, path: str) -> np.ndarray:
    if img.dtype == np.uint16:
        img = (img.astype(np.uint32) * 255 + 32767) // 65535
        img = img.astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(np.nan_to_num(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"{path}: unsupported image dtype {img.dtype}")
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    channels = img.shape[2]
    if channels == 1 or channels == 2:  # gray or gray+alpha: drop alpha
        return np.ascontiguousarray(np.repeat(img[:, :, :1], 3, axis=2))
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if channels == 4:  # BGRA: alpha dropped (boxes refer to all pixels)
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise ValueError(f"{path}: unsupported number of channels {channels}")


def read_image_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as ``np.ndarray[H, W, 3]`` uint8 RGB.

    Raises:
        ValueError: the file is missing, unreadable, empty, truncated, not an image or has
            zero size; the message names the file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read image file ({e.strerror or e})") from e
    if not data:
        raise ValueError(f"{path}: empty file")
    if data.startswith(_JPEG_SOI) and _jpeg_truncated(data):
        raise ValueError(f"{path}: truncated JPEG file (no end-of-image marker)")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # e.g. more pixels than OpenCV's limit
        raise ValueError(f"{path}: cannot decode image ({str(e).strip()})") from e
    if img is None:
        raise ValueError(f"{path}: not a readable image (corrupt, truncated or unknown format)")
    if img.size == 0 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"{path}: image has zero size {img.shape[:2]}")
    return _to_uint8_rgb(img, path)


def list_images(path: str | os.PathLike[str]) -> list[Path]:
    """`path` itself if it is a file, else the images of the folder (sorted by name).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the folder holds no file with an image suffix.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    raise FileNotFoundError(f"{path}: not found")


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``np.ndarray[H, W, 3]`` uint8 RGB -> ``Tensor[3, H, W]`` float32 in [0, 1]."""
    chw = np.ascontiguousarray(image.transpose(2, 0, 1))
    return torch.from_numpy(chw).to(torch.float32).div_(255.0)
