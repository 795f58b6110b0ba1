"""Calibration and evaluation text: loading, tokenizing and sampling windows.

Sources (the same names for calibration and evaluation):

- ``default``: Jane Austen from the Debian package r-cran-janeaustenr (no network needed);
  calibration = *Emma*, evaluation = *Pride and Prejudice*.
- ``wikitext2``: WikiText-2 raw from the Hugging Face hub (calibration = train, evaluation = test).
  ``WANDA_WIKITEXT2_TEST`` may name a local copy of the test split, one non-empty row per line.
- ``c4``: the first shards of allenai/c4 (English) from the Hugging Face hub, as the Wanda reference.
- a path to a text file (``.txt`` or any other existing non-``.npy`` file): the same text for both splits.
- a path to a ``.npy`` file of token ids [nsamples, seqlen]: pins the calibration set (calibration only).

Every user mistake raises :class:`DataError` with one sentence.
"""
from __future__ import annotations

import bz2
import contextlib
import functools
import hashlib
import io
import logging
import lzma
import os
import random
import threading
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import rdata
import torch

from ..core.errors import DataError
from .hub import hub_offline, hub_reachable
from ..store.run_store import atomic_write_bytes
from .texts import read_text_file

SPLITS = ("calib", "eval")
NAMED_SOURCES = ("default", "wikitext2", "c4")
ACCEPTED = "'default' (Jane Austen), 'wikitext2', 'c4', a path to a .txt file, or a .npy file of token ids (calibration only)"

# --- Jane Austen (Debian package r-cran-janeaustenr) -------------------------------------------

AUSTEN_DIRS = (
    Path("/usr/lib/R/site-library/janeaustenr/data"),
    Path("/usr/local/lib/R/site-library/janeaustenr/data"),
    Path("/usr/lib/R/library/janeaustenr/data"),
)
AUSTEN_SPLIT = {"calib": "emma", "eval": "prideprejudice"}

WIKITEXT2_TEST_ENV = "WANDA_WIKITEXT2_TEST"
C4_FILES = {"calib": ("train", "en/c4-train.00000-of-01024.json.gz"), "eval": ("validation", "en/c4-validation.00000-of-00008.json.gz")}
C4_EVAL_DOCS = 1100  # the reference evaluates " ".join of the first 1100 validation documents


def _austen_dir() -> Path:
    for d in AUSTEN_DIRS:
        if (d / "Rdata.rdx").is_file() and (d / "Rdata.rdb").is_file():
            return d
    raise DataError(
        "The default text (Jane Austen) needs the Debian package r-cran-janeaustenr, which is not installed; "
        "install it with `apt-get install r-cran-janeaustenr`"
    )


def _decompress_rdb_blob(blob: bytes, compressed: int) -> bytes:
    """Undo R's lazy-load framing: 4-byte big-endian length, then zlib (1) or a typed bzip2/xz/raw stream (2, 3)."""
    size = int.from_bytes(blob[:4], "big")
    body = blob[4:]
    if compressed in (2, 3):  # R_decompress2/3: one type byte after the length
        kind, body = body[:1], body[1:]
        if kind == b"2":
            out = bz2.decompress(body)
        elif kind == b"Z":
            out = lzma.decompress(body, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}])
        elif kind == b"1":
            out = zlib.decompress(body)
        else:  # b"0": stored uncompressed
            out = body
    else:
        out = zlib.decompress(body)
    if len(out) != size:
        raise DataError(f"the janeaustenr data file is corrupt (an entry decompressed to {len(out)} bytes, expected {size})")
    return out


@functools.lru_cache(maxsize=None)
def _austen_book(name: str) -> str:
    """One book as text, lines joined with newlines. R serialization is parsed by the `rdata` package."""
    d = _austen_dir()
    try:
        index = rdata.read_rds(d / "Rdata.rdx")  # the lazy-load index is a gzip'd RDS: variables -> [offset, length]
        variables = {str(k): v for k, v in index["variables"].items()}
        compressed = int(np.asarray(index.get("compressed", [1])).ravel()[0])
        offset, length = (int(x) for x in variables[name])
        with open(d / "Rdata.rdb", "rb") as f:
            f.seek(offset)
            blob = f.read(length)
        lines = rdata.read_rds(io.BytesIO(_decompress_rdb_blob(blob, compressed)))
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is an unusable installation
        raise DataError(f"could not read {name!r} from the janeaustenr data in {d} ({type(e).__name__}: {e})") from e
    return "\n".join("" if line is None else str(line) for line in lines)


# --- Hugging Face hub datasets -----------------------------------------------------------------


def _hub_dataset(what: str, path: str, **kwargs: Any) -> Any:
    """`datasets.load_dataset(path, **kwargs)`: from the local cache if there, else download if the hub is reachable."""
    import datasets  # here, not at the top: 1.3 s to import, and only hub sources need it

    with contextlib.suppress(Exception), hub_offline():
        return datasets.load_dataset(path, **kwargs)
    if not hub_reachable():
        raise DataError(
            f"{what} must be downloaded from the Hugging Face hub, which is not reachable from here; "
            "use 'default' or a local .txt file"
        )
    try:
        return datasets.load_dataset(path, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"could not download {what} from the Hugging Face hub ({type(e).__name__}: {e})") from e


def _wikitext2(split: str) -> tuple[str, str]:
    if split == "eval":
        local = os.environ.get(WIKITEXT2_TEST_ENV)
        if local and Path(local).is_file():
            lines = Path(local).read_text(encoding="utf-8").splitlines()
            return "\n\n".join(line for line in lines if line.strip()), "wikitext2:test"
        ds = _hub_dataset("wikitext2", "wikitext", name="wikitext-2-raw-v1", split="test")
        return "\n\n".join(ds["text"]), "wikitext2:test"
    ds = _hub_dataset("wikitext2", "wikitext", name="wikitext-2-raw-v1", split="train")
    return " ".join(ds["text"]), "wikitext2:train"


def _c4(split: str) -> tuple[str, str]:
    hf_split, data_file = C4_FILES[split]
    ds = _hub_dataset("c4", "allenai/c4", data_files={hf_split: data_file}, split=hf_split)
    if split == "eval":
        return " ".join(ds[:C4_EVAL_DOCS]["text"]), "c4:validation"
    return "\n\n".join(ds["text"]), "c4:train"


# --- local files -------------------------------------------------------------------------------


def _is_npy(source: str) -> bool:
    return source.lower().endswith(".npy")


def _text_path(source: str) -> Path | None:
    """The path of a text-file source, or None if `source` does not look like one."""
    path = Path(source).expanduser()
    if source.lower().endswith(".txt") or path.is_file():
        return path
    return None


def _file_stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
        return st.st_mtime_ns, st.st_size
    except OSError:
        return 0, -1


# --- public: text ------------------------------------------------------------------------------


def load_text(source: str, split: str) -> tuple[str, str]:
    """Return (text, label) of `split` ("calib" or "eval") of a source; see the module docstring for sources."""
    if split not in SPLITS:
        raise DataError(f"split must be 'calib' or 'eval', got {split!r}")
    if not isinstance(source, str) or not source.strip():
        raise DataError(f"no data source given; use {ACCEPTED}")
    source = source.strip()
    key = source.lower()
    if key == "default":
        book = AUSTEN_SPLIT[split]
        return _austen_book(book), f"austen:{book}"
    if key == "wikitext2":
        return _wikitext2(split)
    if key == "c4":
        return _c4(split)
    if _is_npy(source):
        raise DataError(f"{Path(source).name!r} holds token ids, not text; a .npy file can only pin the calibration windows")
    path = _text_path(source)
    if path is not None:
        return read_text_file(path), f"text:{path.name}"
    raise DataError(f"unknown data source {source!r}; use {ACCEPTED}")


# --- tokenization (cached per process) ---------------------------------------------------------

_TOKEN_CACHE: OrderedDict[tuple, tuple[torch.Tensor, str]] = OrderedDict()
_TOKEN_CACHE_SIZE = 4
_TOKEN_CACHE_LOCK = threading.Lock()


def _tokenize(tokenizer: Any, text: str) -> torch.Tensor:
    """All of `text` as a 1-D LongTensor, without the 'longer than the maximum sequence length' warning."""
    log = logging.getLogger("transformers.tokenization_utils_base")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        ids = tokenizer(text, return_tensors="pt").input_ids
    finally:
        log.setLevel(level)
    return ids.reshape(-1).to(torch.long)


def text_tokens(tokenizer: Any, source: str, split: str) -> tuple[torch.Tensor, str]:
    """(1-D token ids, label) of a split, cached by (tokenizer name, vocab size, source, split)."""
    stamp: tuple = ()
    if source.strip().lower() not in NAMED_SOURCES:
        stamp = _file_stamp(Path(source.strip()).expanduser())  # a changed file is re-read
    elif source.strip().lower() == "wikitext2" and split == "eval":
        stamp = (os.environ.get(WIKITEXT2_TEST_ENV),)
    key = (type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""), len(tokenizer), source, split, stamp)
    with _TOKEN_CACHE_LOCK:
        if key in _TOKEN_CACHE:
            _TOKEN_CACHE.move_to_end(key)
            return _TOKEN_CACHE[key]
    text, label = load_text(source, split)
    ids = _tokenize(tokenizer, text)
    with _TOKEN_CACHE_LOCK:
        _TOKEN_CACHE[key] = (ids, label)
        while len(_TOKEN_CACHE) > _TOKEN_CACHE_SIZE:
            _TOKEN_CACHE.popitem(last=False)
    return ids, label


def clear_caches() -> None:
    """Forget cached texts and tokenizations (tests, or to free memory)."""
    with _TOKEN_CACHE_LOCK:
        _TOKEN_CACHE.clear()
    _austen_book.cache_clear()


# --- public: calibration windows ---------------------------------------------------------------


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{name} must be a positive integer, got {value!r}")


def _load_npy_windows(tokenizer: Any, source: str, nsamples: int, seqlen: int) -> torch.Tensor:
    path = Path(source.strip()).expanduser()
    if not path.is_file():
        raise DataError(f"token file {str(path)!r} does not exist")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - not a .npy, or an object array
        raise DataError(f"{path.name!r} is not a readable .npy array of token ids ({type(e).__name__}: {e})") from e
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iu":
        raise DataError(f"{path.name!r} must hold integer token ids, but its dtype is {getattr(arr, 'dtype', type(arr))}")
    if arr.shape != (nsamples, seqlen):
        raise DataError(f"{path.name!r} has shape {tuple(arr.shape)}, but nsamples x seqlen needs ({nsamples}, {seqlen})")
    vocab = len(tokenizer)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab:
        raise DataError(f"{path.name!r} has token ids in [{lo}, {hi}], outside the tokenizer's vocabulary [0, {vocab})")
    return torch.from_numpy(arr.astype(np.int64, copy=True))


def calibration_windows(tokenizer: Any, source: str, nsamples: int, seqlen: int, seed: int) -> tuple[torch.Tensor, dict]:
    """`nsamples` random windows of `seqlen` tokens from the calibration split, as a LongTensor [nsamples, seqlen].

    Window starts are drawn like the Wanda reference, but from a local `random.Random(seed)`, so the
    global RNG state is neither used nor changed. A `.npy` source is loaded as the windows themselves.
    """
    _check_count("nsamples", nsamples)
    _check_count("seqlen", seqlen)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"seed must be an integer, got {seed!r}")
    if not isinstance(source, str) or not source.strip():
        raise DataError(f"no calibration source given; use {ACCEPTED}")
    info: dict[str, Any] = {"source": source, "nsamples": nsamples, "seqlen": seqlen, "seed": seed}
    if _is_npy(source.strip()):
        windows = _load_npy_windows(tokenizer, source, nsamples, seqlen)
        info.update(label=f"tokens:{Path(source.strip()).name}", tokens_available=int(windows.numel()),
                    sha256=windows_checksum(windows))
        return windows, info
    ids, label = text_tokens(tokenizer, source, "calib")
    total = int(ids.numel())
    if total < nsamples * seqlen:
        raise DataError(
            f"{label} has only {total:,} tokens, but {nsamples} x {seqlen} calibration windows need {nsamples * seqlen:,}; "
            "use fewer or shorter windows or a longer text"
        )
    rng = random.Random(seed)
    starts = [rng.randint(0, total - seqlen) for _ in range(nsamples)]
    windows = torch.stack([ids[i : i + seqlen] for i in starts]).clone()
    info.update(label=label, tokens_available=total, sha256=windows_checksum(windows), starts=starts)
    return windows, info


def windows_checksum(windows: torch.Tensor) -> str:
    """sha256 of token windows as the int64 array a pinned .npy holds: equal windows, equal checksum."""
    return hashlib.sha256(np.ascontiguousarray(windows.detach().cpu().numpy().astype(np.int64)).tobytes()).hexdigest()


def save_token_windows(path: str | os.PathLike, windows: torch.Tensor) -> None:
    """Write calibration windows [nsamples, seqlen] as an int64 .npy, to pin them for a later run."""
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2:
        raise DataError("token windows must be a 2-D tensor [nsamples, seqlen]")
    if windows.dtype.is_floating_point or windows.dtype.is_complex or windows.dtype == torch.bool:
        raise DataError(f"token windows must hold integer ids, got dtype {windows.dtype}")
    path = Path(path).expanduser()
    if path.suffix.lower() != ".npy":
        raise DataError(f"token windows are saved as .npy; {path.name!r} does not end in .npy")
    buf = io.BytesIO()
    np.save(buf, windows.detach().cpu().numpy().astype(np.int64), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())  # a kill mid-write leaves the old file or none, never half of one


# --- public: evaluation tokens -----------------------------------------------------------------


def eval_tokens(tokenizer: Any, source: str) -> tuple[torch.Tensor, str]:
    """The evaluation split tokenized as a LongTensor [1, T], and its label. Shared cache: do not modify it."""
    if not isinstance(source, str) or not source.strip():
        raise DataError(f"no evaluation source given; use {ACCEPTED}")
    if _is_npy(source.strip()):
        raise DataError(f"{Path(source.strip()).name!r} holds calibration token ids; evaluation needs a text source")
    ids, label = text_tokens(tokenizer, source, "eval")
    return ids.unsqueeze(0), label
