"""An on-disk cache of feature matrices, so a second train, predict or backtest on unchanged candles skips TA-Lib.

An entry is a folder in the cache folder (by default `DB.features/` beside the database) holding `values.npy`
(N, F) float32, `timestamps.npy` (N,) int64 and `atr.npy` (N,) float64, loaded memory-mapped, and
`header.json`, which is written last and is what makes an entry exist. The entry's name is a key over what
the features depend on: the symbol, the candles (first and last timestamp, row count, SHA-256 checksums of the
timestamp and OHLCV arrays, and of the other symbols' joined columns), the feature parameters (the feature set
and the other symbols among them) and names, and the versions of this package and TA-Lib.
Any change to the candles (new candles, a repaired row) is a different key, so a miss.

The header records each array file's shape, dtype and CRC-32; an entry whose header cannot be read, whose
files are missing, truncated or changed (corrupt), or whose header describes other candles or settings than
its name says (stale) is never used: a warning names it, and it is rebuilt. Every file is written atomically
(`core.atomic`), so a crash leaves an old entry, no entry, or a new one.

New candles are not appended to an entry: TA-Lib's recursive indicators (EMA, MACD, RSI, ATR) cannot resume
from a saved state, so extending the matrix would mean recomputing the whole history anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import talib

from lstm_trading import __version__
from lstm_trading.core.atomic import atomic_path, write_text_atomic
from lstm_trading.core.config import FeatureConfig, RuntimeConfig
from lstm_trading.core.errors import DataError, WriteError
from lstm_trading.features.compute import CANDLE_COLUMNS, compute_features, feature_names
from lstm_trading.features.matrix import FeatureMatrix
from lstm_trading.features.symbols import require_joined

FORMAT = "lstm-trading-features"
FORMAT_VERSION = 1
HEADER_FILE = "header.json"
ARRAYS = ("values", "timestamps", "atr")
MAX_ENTRIES = 6  # entries kept per cache folder, the least recently used are removed


def default_cache_dir(db: Path | str) -> Path:
    """`DB.features/` beside the database `DB`."""
    db = Path(db)
    return db.with_name(db.name + ".features")


def cache_folder(runtime: RuntimeConfig, db: Path | str) -> Path | None:
    """The feature cache folder of `db` under these settings: `runtime.cache_dir`, else beside `db`; None: off."""
    if not runtime.cache:
        return None
    return Path(runtime.cache_dir) if runtime.cache_dir else default_cache_dir(db)


def _digest(*buffers: Any) -> str:
    """SHA-256 of the buffers (about 1 GB/s with the CPU's SHA instructions: 50 ms for two years of minutes)."""
    digest = hashlib.sha256()
    for buffer in buffers:
        digest.update(memoryview(buffer).cast("B"))
    return digest.hexdigest()


def _file_crc(path: Path) -> int:
    """CRC-32 of a file: it finds flipped, lost or added bytes at several GB/s, and a load verifies every byte."""
    crc = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return crc


def candles_identity(candles: pd.DataFrame, config: FeatureConfig, symbol: str) -> dict[str, Any]:
    """What the features of `candles` depend on, as JSON-ready values (the checksum covers every row)."""
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise DataError(
            f"candles lack the column(s) {', '.join(missing)}; a candle frame has {', '.join(CANDLE_COLUMNS)}"
        )
    arrays = [np.ascontiguousarray(candles["timestamp"].to_numpy(dtype=np.int64))]
    columns = [*CANDLE_COLUMNS[1:], *require_joined(candles, config.with_symbols)]
    arrays += [np.ascontiguousarray(candles[c].to_numpy(dtype=np.float64)) for c in columns]
    timestamps = arrays[0]
    with ThreadPoolExecutor() as pool:  # hashlib lets go of the GIL: one column per core
        digests = list(pool.map(_digest, arrays))
    return {
        "symbol": symbol,
        "rows": len(candles),
        "first_timestamp": int(timestamps[0]) if len(timestamps) else None,
        "last_timestamp": int(timestamps[-1]) if len(timestamps) else None,
        "candles_sha256": digests,
        "feature_config": json.loads(json.dumps(asdict(config))),  # as the header reads back: lists, not tuples
        "feature_names": list(feature_names(config)),
        "package_version": __version__,
        "talib_version": str(getattr(talib, "__version__", "unknown")),
    }


def cache_key(identity: dict[str, Any]) -> str:
    return _digest(json.dumps(identity, sort_keys=True).encode("utf-8"))


class CacheEntryError(Exception):
    """An entry that must not be used; the message says why (internal: the cache rebuilds it)."""


@dataclass(frozen=True)
class CachedFeatures:
    """A feature matrix and how it was obtained: `hit`, `miss` (computed and stored) or `rebuilt`."""

    matrix: FeatureMatrix
    status: str
    entry: Path | None


class FeatureCache:
    """A folder of feature-matrix entries keyed by the candles and the feature parameters."""

    def __init__(self, folder: Path | str, *, max_entries: int = MAX_ENTRIES) -> None:
        self.folder = Path(folder)
        self.max_entries = max_entries

    def entry_path(self, identity: dict[str, Any]) -> Path:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", identity["symbol"]) or "candles"
        return self.folder / f"{name}-{cache_key(identity)[:24]}"

    def features(
        self, candles: pd.DataFrame, config: FeatureConfig = FeatureConfig(), *, symbol: str = ""
    ) -> CachedFeatures:
        """The feature matrix of `candles`: loaded from a valid entry, else computed and stored."""
        identity = candles_identity(candles, config, symbol)
        entry = self.entry_path(identity)
        status = "miss"
        if (entry / HEADER_FILE).exists():
            try:
                matrix = self._load(entry, identity, candles, config)
            except CacheEntryError as error:
                warnings.warn(f"{entry}: {error}; the features are recomputed and the entry rewritten", stacklevel=2)
                shutil.rmtree(entry, ignore_errors=True)
                status = "rebuilt"
            else:
                os.utime(entry / HEADER_FILE)  # most recently used: evicted last
                return CachedFeatures(matrix, "hit", entry)
        matrix = FeatureMatrix.from_frame(compute_features(candles, config), config.max_gap_minutes)
        if len(matrix) == 0:
            return CachedFeatures(matrix, status, None)  # nothing worth keeping: callers report the short history
        try:
            self._store(entry, identity, matrix)
        except (OSError, WriteError) as error:
            cause = error.strerror if isinstance(error, OSError) else str(error)
            warnings.warn(
                f"{entry}: cannot write the feature cache ({cause or error}); continuing without it",
                stacklevel=2,
            )
            return CachedFeatures(matrix, status, None)
        self._evict(keep=entry)
        return CachedFeatures(matrix, status, entry)

    def _load(
        self, entry: Path, identity: dict[str, Any], candles: pd.DataFrame, config: FeatureConfig
    ) -> FeatureMatrix:
        try:
            header = json.loads((entry / HEADER_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CacheEntryError(f"corrupt feature cache header ({error})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise CacheEntryError("corrupt feature cache header (not a feature cache header)")
        if header.get("format_version") != FORMAT_VERSION:
            raise CacheEntryError(f"stale feature cache entry (format version {header.get('format_version')})")
        if header.get("identity") != identity:
            changed = sorted(k for k in identity if (header.get("identity") or {}).get(k) != identity[k])
            raise CacheEntryError(f"stale feature cache entry (made for other {', '.join(changed) or 'data'})")
        arrays: dict[str, np.ndarray] = {}
        paths = [entry / f"{name}.npy" for name in ARRAYS]
        for path in paths:
            if not path.exists():
                raise CacheEntryError(f"corrupt feature cache entry ({path.name} is missing)")
        with ThreadPoolExecutor() as pool:  # zlib lets go of the GIL: one file per core
            crcs = dict(zip(ARRAYS, pool.map(_file_crc, paths), strict=True))
        for name, path in zip(ARRAYS, paths, strict=True):
            described = (header.get("arrays") or {}).get(name) or {}
            if crcs[name] != described.get("crc32"):
                raise CacheEntryError(f"corrupt feature cache entry ({path.name} does not match its checksum)")
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as error:
                raise CacheEntryError(f"corrupt feature cache entry ({path.name}: {error})") from None
            if list(array.shape) != described.get("shape") or str(array.dtype) != described.get("dtype"):
                raise CacheEntryError(f"corrupt feature cache entry ({path.name} has another shape or dtype)")
            arrays[name] = array
        # Feature rows are candle rows minus each segment's warm-up (and, with other symbols, minus the minutes
        # one of them lacks): so their timestamps are an increasing subset of the candles', not their last rows.
        stamps = candles["timestamp"].to_numpy(dtype=np.int64)
        kept = np.asarray(arrays["timestamps"])
        at = np.minimum(np.searchsorted(stamps, kept), max(len(stamps) - 1, 0))
        if len(kept) and not (len(stamps) and (np.diff(kept) > 0).all() and np.array_equal(stamps[at], kept)):
            raise CacheEntryError("stale feature cache entry (its timestamps are not among the candles')")
        return FeatureMatrix(
            values=arrays["values"],
            timestamps=np.asarray(arrays["timestamps"]),
            atr=arrays["atr"],
            names=tuple(header["names"]),
            max_gap_minutes=config.max_gap_minutes,
        )

    def _store(self, entry: Path, identity: dict[str, Any], matrix: FeatureMatrix) -> None:
        entry.mkdir(parents=True, exist_ok=True)
        described: dict[str, Any] = {}
        for name in ARRAYS:
            array = np.ascontiguousarray(getattr(matrix, name))
            path = entry / f"{name}.npy"
            with atomic_path(path) as temporary:
                with open(temporary, "wb") as handle:
                    np.save(handle, array, allow_pickle=False)
                crc = _file_crc(temporary)
            described[name] = {"shape": list(array.shape), "dtype": str(array.dtype), "crc32": crc}
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "identity": identity,
            "names": list(matrix.names),
            "arrays": described,
        }
        write_text_atomic(entry / HEADER_FILE, json.dumps(header, indent=2) + "\n")

    def _evict(self, *, keep: Path) -> None:
        """Remove the least recently used entries beyond `max_entries` (never `keep`)."""
        entries = [p for p in self.folder.iterdir() if (p / HEADER_FILE).exists() and p != keep]
        entries.sort(key=lambda p: (p / HEADER_FILE).stat().st_mtime, reverse=True)
        for old in entries[max(self.max_entries - 1, 0) :]:
            shutil.rmtree(old, ignore_errors=True)


def feature_matrix(
    candles: pd.DataFrame,
    config: FeatureConfig = FeatureConfig(),
    *,
    symbol: str = "",
    cache_dir: Path | str | None = None,
) -> FeatureMatrix:
    """`FeatureMatrix.from_frame(compute_features(candles, config))`, through the cache in `cache_dir` if given."""
    if cache_dir is None:
        return FeatureMatrix.from_frame(compute_features(candles, config), config.max_gap_minutes)
    return FeatureCache(cache_dir).features(candles, config, symbol=symbol).matrix
