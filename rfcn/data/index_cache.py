"""Parse once: a disk cache of the compact indexes built from annotation files.

An index (numpy columns, see `rfcn.data.records`) is stored as one uncompressed ``.npz``
(loaded with ``allow_pickle=False``: never pickle) per annotation file in the cache directory
(``cache_dir`` argument, else ``$RFCN_CACHE_DIR``, else ``~/.cache/rfcn/index``). It is keyed
by the source's size, ``mtime_ns`` and a BLAKE2b digest of its first, middle and last MiB,
plus the reader's kind and version: a changed file, or a reader whose cleaning rules changed,
is parsed again. Hashing the whole file was measured at 0.7 to 1.2 s for a COCO-size 380 MB
file (twice the time of loading the cache itself), so only these samples are hashed: an edit
that keeps the size, and the mtime to the nanosecond, and misses the three samples is not
detected.

A cache file that cannot be read (truncated, garbage, columns that do not fit) is reported
with a warning and rebuilt; an unwritable cache directory is reported and parsing goes on
without a cache. Files are written atomically (temporary file in the same directory, then
``os.replace``), so concurrent processes (DDP ranks) never read a half-written cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from rfcn.data.process_memory import release_free_heap

__all__ = ["CACHE_ENV", "SourceKey", "cache_file", "cached_index", "default_cache_dir",
           "source_key"]

logger = logging.getLogger(__name__)

CACHE_ENV = "RFCN_CACHE_DIR"
_SAMPLE = 1 << 20  # bytes hashed at the start, middle and end of the source
_KEY_FIELD = "__source_key__"

T = TypeVar("T")


def default_cache_dir() -> Path:
    """``$RFCN_CACHE_DIR`` if set, else ``~/.cache/rfcn/index``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rfcn" / "index"


@dataclass(frozen=True)
class SourceKey:
    """What identifies one version of a source file (and of the reader parsing it)."""

    size: int
    mtime_ns: int
    digest: str
    reader: str  # kind and version of the reader

    def encode(self) -> np.ndarray:
        text = f"{self.size}|{self.mtime_ns}|{self.digest}|{self.reader}"
        return np.frombuffer(text.encode(), dtype=np.uint8)


def source_key(path: str | os.PathLike[str], reader: str) -> SourceKey:
    """Size, mtime_ns and a digest of the first, middle and last MiB of ``path``."""
    st = os.stat(path)
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        for start in sorted({0, max(0, st.st_size // 2 - _SAMPLE // 2),
                             max(0, st.st_size - _SAMPLE)}):
            f.seek(start)
            h.update(f.read(_SAMPLE))
    return SourceKey(st.st_size, st.st_mtime_ns, h.hexdigest(), reader)


def cache_file(cache_dir: Path, source: str | os.PathLike[str], reader: str) -> Path:
    """One cache file per (absolute source path, reader kind)."""
    real = os.path.realpath(os.fspath(source))
    tag = hashlib.sha1(f"{real}|{reader.split('@')[0]}".encode()).hexdigest()[:16]
    return cache_dir / f"{Path(real).stem}-{tag}.npz"


def _read(path: Path, key: SourceKey, decode: Callable[[dict[str, np.ndarray]], T]) -> T | None:
    """The cached value, or None when the cache is stale; raises when it is damaged."""
    with np.load(path, allow_pickle=False) as npz:
        stored = npz[_KEY_FIELD] if _KEY_FIELD in npz.files else None
        if stored is None or stored.tobytes() != key.encode().tobytes():
            return None
        arrays = {name: npz[name] for name in npz.files if name != _KEY_FIELD}
    return decode(arrays)


def _write(path: Path, key: SourceKey, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays, **{_KEY_FIELD: key.encode()})
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _try_cached(path: Path, key: SourceKey, source: str,
                decode: Callable[[dict[str, np.ndarray]], T]) -> T | None:
    if not path.exists():
        return None
    try:
        value = _read(path, key, decode)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        logger.warning("index cache %s of %s is unreadable (%s: %s): parsing again", path,
                       source, type(e).__name__, e)
        return None
    if value is None:
        logger.info("index cache %s is out of date (%s changed): parsing again", path, source)
    return value


def cached_index(
    source: str | os.PathLike[str],
    reader: str,
    build: Callable[[], T],
    encode: Callable[[T], dict[str, np.ndarray]],
    decode: Callable[[dict[str, np.ndarray]], T],
    cache_dir: str | os.PathLike[str] | None = None,
) -> T:
    """``build()`` once per version of ``source``; later calls ``decode`` the cached arrays.

    Args:
        source: the annotation file the index is parsed from.
        reader: kind and version of the parser, e.g. ``"coco@3"``: a new version invalidates
            the caches of the old one.
        build: parses ``source`` (raising its own errors for a bad or missing file).
        encode, decode: the value as a dict of numpy arrays (no object arrays) and back;
            ``decode`` raises ValueError for arrays that do not fit together.
        cache_dir: default `default_cache_dir()`.
    """
    source = os.fspath(source)
    try:
        key = source_key(source, reader)
    except OSError:
        return build()  # missing or unreadable: build() reports it, naming the file
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = cache_file(directory, source, reader)
    start = time.perf_counter()
    value = _try_cached(path, key, source, decode)
    if value is not None:
        logger.info("index of %s from cache %s in %.2f s", source, path,
                    time.perf_counter() - start)
        return value
    start = time.perf_counter()
    value = build()
    release_free_heap()  # the parsed JSON is freed: hand its heap back (RSS, forked workers)
    parsed = time.perf_counter() - start
    try:
        _write(path, key, encode(value))
    except OSError as e:
        logger.warning("parsed %s in %.1f s; cannot write the index cache %s (%s)", source,
                       parsed, path, e)
        return value
    logger.info("parsed %s in %.1f s, cached to %s", source, parsed, path)
    return value
