"""Tests of wanda_engine.inputs.data: sources, calibration windows, pinned token files, evaluation tokens."""
from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from wanda_engine.inputs import data
from wanda_engine.inputs import texts
from wanda_engine.core.errors import DataError

SHARED_WIKITEXT2 = Path(__file__).parents[1].parent / "shared/data/wikitext2-raw-test.txt"
AUSTEN_PRESENT = any((d / "Rdata.rdx").is_file() and (d / "Rdata.rdb").is_file() for d in data.AUSTEN_DIRS)

CORPUS = (
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step. "
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want "
    "of a wife. Numbers like 12345 and 67890, punctuation (!?;:) and newlines\nalso appear.\n\n"
)


def make_tokenizer():
    """A tiny GPT-2-like byte-level BPE tokenizer trained in memory (no network)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]
    )
    tok.train_from_iterator([CORPUS] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", model_max_length=64)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(autouse=True)
def _fresh_caches():
    data.clear_caches()
    yield
    data.clear_caches()


def write_text(tmp_path: Path, text: str, name: str = "corpus.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text).input_ids)


# --- sources --------------------------------------------------------------------------------------


@pytest.mark.skipif(not AUSTEN_PRESENT, reason="Debian package r-cran-janeaustenr is not installed")
def test_austen_calib_is_emma_and_eval_is_pride_and_prejudice():
    emma, calib_label = data.load_text("default", "calib")
    pp, eval_label = data.load_text("default", "eval")
    assert calib_label == "austen:emma"
    assert eval_label == "austen:prideprejudice"
    assert emma != pp
    assert len(emma.split()) > 100_000 and len(pp.split()) > 100_000
    assert "Emma Woodhouse, handsome, clever, and rich" in emma
    assert "It is a truth universally acknowledged" in pp
    assert "\n\n" in emma  # lines joined with newlines; empty lines separate paragraphs
    assert data.load_text("default", "calib")[0] is emma  # cached per process


def test_austen_missing_names_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "AUSTEN_DIRS", (tmp_path / "nowhere",))
    data.clear_caches()
    with pytest.raises(DataError, match=r"apt-get install r-cran-janeaustenr"):
        data.load_text("default", "calib")


def test_text_file_gives_same_text_for_both_splits(tmp_path):
    path = write_text(tmp_path, "Hello there.\nSecond line.\n")
    calib, label = data.load_text(str(path), "calib")
    assert calib == "Hello there.\nSecond line.\n"
    assert label == "text:corpus.txt"
    assert data.load_text(str(path), "eval") == (calib, label)


def test_existing_file_without_txt_suffix_is_read_as_text(tmp_path):
    path = write_text(tmp_path, "plain words here", name="notes.md")
    assert data.load_text(str(path), "calib")[0] == "plain words here"


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty"),
        (b"   \n\t\n  ", "empty"),
        (b"text\x00with a NUL byte", "binary"),
        (b"caf\xe9 is latin-1, not utf-8", "UTF-8"),
    ],
    ids=["empty", "whitespace", "nul-bytes", "not-utf8"],
)
def test_unusable_text_files_raise(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        data.load_text(str(path), "calib")


def test_missing_text_file_raises(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load_text(str(tmp_path / "absent.txt"), "calib")


def test_oversized_text_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(texts, "MAX_TEXT_BYTES", 10)
    path = write_text(tmp_path, "more than ten bytes of text")
    with pytest.raises(DataError, match="refused"):
        data.load_text(str(path), "calib")


def test_unknown_source_lists_accepted_sources():
    with pytest.raises(DataError) as err:
        data.load_text("no-such-corpus", "calib")
    message = str(err.value)
    for accepted in ("default", "wikitext2", "c4", ".txt", ".npy"):
        assert accepted in message


def test_bad_split_raises(tmp_path):
    with pytest.raises(DataError, match="split"):
        data.load_text("default", "train")


def test_npy_source_is_not_text(tmp_path):
    with pytest.raises(DataError, match="token ids"):
        data.load_text(str(tmp_path / "windows.npy"), "eval")


@pytest.mark.skipif(not SHARED_WIKITEXT2.is_file(), reason="shared WikiText-2 test split is not available")
def test_wikitext2_eval_reads_local_test_split(monkeypatch, tokenizer):
    monkeypatch.setenv(data.WIKITEXT2_TEST_ENV, str(SHARED_WIKITEXT2))
    text, label = data.load_text("wikitext2", "eval")
    rows = [r for r in SHARED_WIKITEXT2.read_text(encoding="utf-8").splitlines() if r.strip()]
    assert label == "wikitext2:test"
    assert len(rows) == 2891
    assert text == "\n\n".join(rows)
    ids, eval_label = data.eval_tokens(tokenizer, "wikitext2")
    assert eval_label == "wikitext2:test"
    assert ids.dim() == 2 and ids.shape[0] == 1 and ids.shape[1] > 200_000
    assert ids.dtype == torch.long


@pytest.mark.parametrize("source, split", [("wikitext2", "calib"), ("c4", "calib"), ("c4", "eval")])
def test_hub_sources_fail_fast_offline(monkeypatch, source, split):
    monkeypatch.delenv(data.WIKITEXT2_TEST_ENV, raising=False)
    start = time.monotonic()
    with pytest.raises(DataError, match="Hugging Face hub"):
        data.load_text(source, split)
    assert time.monotonic() - start < 10


# --- calibration windows --------------------------------------------------------------------------


@pytest.fixture
def long_text_file(tmp_path) -> Path:
    return write_text(tmp_path, CORPUS * 40)


def test_windows_shape_dtype_and_content(tokenizer, long_text_file):
    windows, info = data.calibration_windows(tokenizer, str(long_text_file), nsamples=6, seqlen=32, seed=0)
    assert windows.shape == (6, 32)
    assert windows.dtype == torch.long
    full = tokenizer(long_text_file.read_text(encoding="utf-8"), return_tensors="pt").input_ids[0].tolist()
    assert info == {
        "source": str(long_text_file),
        "label": "text:corpus.txt",
        "nsamples": 6,
        "seqlen": 32,
        "seed": 0,
        "tokens_available": len(full),
        "sha256": data.windows_checksum(windows),
        "starts": info["starts"],
    }
    # each window is the text's tokens from its recorded start
    assert [full[s : s + 32] for s in info["starts"]] == windows.tolist()
    assert data.windows_checksum(windows) != data.windows_checksum(windows.flip(0))
    joined = " ".join(map(str, full))
    for row in windows.tolist():  # every window is a contiguous slice of the tokenized text
        assert " ".join(map(str, row)) in joined


def test_windows_are_reproducible_and_leave_global_rng_alone(tokenizer, long_text_file):
    py_state, torch_state = random.getstate(), torch.random.get_rng_state()
    a, _ = data.calibration_windows(tokenizer, str(long_text_file), 8, 16, seed=1)
    random.seed(12345)
    torch.manual_seed(999)
    b, _ = data.calibration_windows(tokenizer, str(long_text_file), 8, 16, seed=1)
    c, _ = data.calibration_windows(tokenizer, str(long_text_file), 8, 16, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    random.setstate(py_state)
    torch.random.set_rng_state(torch_state)
    data.calibration_windows(tokenizer, str(long_text_file), 8, 16, seed=3)
    assert random.getstate() == py_state
    assert torch.equal(torch.random.get_rng_state(), torch_state)


def test_too_short_text_reports_token_counts(tokenizer, tmp_path):
    text = "just a few words of text"
    path = write_text(tmp_path, text)
    available = n_tokens(tokenizer, text)
    with pytest.raises(DataError) as err:
        data.calibration_windows(tokenizer, str(path), nsamples=4, seqlen=64, seed=0)
    message = str(err.value)
    assert f"{available:,} tokens" in message
    assert "4 x 64" in message and "256" in message


def test_exactly_enough_tokens_is_accepted(tokenizer, tmp_path):
    text = CORPUS * 2
    path = write_text(tmp_path, text)
    total = n_tokens(tokenizer, text)
    windows, info = data.calibration_windows(tokenizer, str(path), nsamples=1, seqlen=total, seed=0)
    assert windows.shape == (1, total) and info["tokens_available"] == total


@pytest.mark.skipif(not AUSTEN_PRESENT, reason="Debian package r-cran-janeaustenr is not installed")
def test_default_windows_come_from_emma(tokenizer):
    windows, info = data.calibration_windows(tokenizer, "default", nsamples=4, seqlen=128, seed=0)
    assert windows.shape == (4, 128)
    assert info["label"] == "austen:emma"
    assert info["tokens_available"] > 100_000


def test_tokenization_is_cached_and_follows_file_changes(tokenizer, long_text_file):
    first, _ = data.eval_tokens(tokenizer, str(long_text_file))
    again, _ = data.eval_tokens(tokenizer, str(long_text_file))
    assert again.data_ptr() == first.data_ptr()  # served from the per-process cache
    long_text_file.write_text("a brand new and different text", encoding="utf-8")
    changed, _ = data.eval_tokens(tokenizer, str(long_text_file))
    assert changed.shape[1] == n_tokens(tokenizer, "a brand new and different text")


def test_invalid_counts_raise(tokenizer, long_text_file):
    with pytest.raises(DataError, match="nsamples"):
        data.calibration_windows(tokenizer, str(long_text_file), nsamples=0, seqlen=8, seed=0)
    with pytest.raises(DataError, match="seqlen"):
        data.calibration_windows(tokenizer, str(long_text_file), nsamples=2, seqlen=-1, seed=0)


# --- pinned token windows (.npy) ------------------------------------------------------------------


def test_npy_round_trips_through_save_token_windows(tokenizer, long_text_file, tmp_path):
    windows, _ = data.calibration_windows(tokenizer, str(long_text_file), 5, 24, seed=7)
    path = tmp_path / "pinned.npy"
    data.save_token_windows(path, windows)
    stored = np.load(path, allow_pickle=False)
    assert stored.dtype == np.int64 and stored.shape == (5, 24)
    loaded, info = data.calibration_windows(tokenizer, str(path), 5, 24, seed=123)
    assert torch.equal(loaded, windows)
    assert loaded.dtype == torch.long
    assert info["label"] == "tokens:pinned.npy"
    assert info["tokens_available"] == 5 * 24


def test_npy_wrong_shape_names_both_shapes(tokenizer, tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.zeros((3, 10), dtype=np.int64))
    with pytest.raises(DataError, match=r"\(3, 10\).*\(4, 10\)"):
        data.calibration_windows(tokenizer, str(path), 4, 10, seed=0)
    np.save(path, np.zeros(40, dtype=np.int64))
    with pytest.raises(DataError, match="shape"):
        data.calibration_windows(tokenizer, str(path), 4, 10, seed=0)


def test_npy_float_dtype_raises(tokenizer, tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.zeros((2, 8), dtype=np.float32))
    with pytest.raises(DataError, match="float32"):
        data.calibration_windows(tokenizer, str(path), 2, 8, seed=0)


@pytest.mark.parametrize("bad_id", [-1, "vocab"])
def test_npy_out_of_vocabulary_ids_raise(tokenizer, tmp_path, bad_id):
    arr = np.ones((2, 8), dtype=np.int32)
    arr[1, 3] = len(tokenizer) if bad_id == "vocab" else bad_id
    path = tmp_path / "w.npy"
    np.save(path, arr)
    with pytest.raises(DataError, match=f"vocabulary \\[0, {len(tokenizer)}\\)"):
        data.calibration_windows(tokenizer, str(path), 2, 8, seed=0)


def test_npy_missing_or_not_npy_raises(tokenizer, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.calibration_windows(tokenizer, str(tmp_path / "absent.npy"), 2, 8, seed=0)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not a numpy file")
    with pytest.raises(DataError, match="not a readable .npy"):
        data.calibration_windows(tokenizer, str(garbage), 2, 8, seed=0)


def test_save_token_windows_rejects_bad_input(tmp_path):
    with pytest.raises(DataError, match="2-D"):
        data.save_token_windows(tmp_path / "w.npy", torch.zeros(5, dtype=torch.long))
    with pytest.raises(DataError, match="integer"):
        data.save_token_windows(tmp_path / "w.npy", torch.zeros(2, 3))
    with pytest.raises(DataError, match=".npy"):
        data.save_token_windows(tmp_path / "w.txt", torch.zeros(2, 3, dtype=torch.long))
    assert not (tmp_path / "w.npy").exists() and not (tmp_path / "w.txt").exists()


# --- evaluation tokens ----------------------------------------------------------------------------


def test_eval_tokens_of_text_file(tokenizer, long_text_file):
    ids, label = data.eval_tokens(tokenizer, str(long_text_file))
    expected = tokenizer(long_text_file.read_text(encoding="utf-8"), return_tensors="pt").input_ids
    assert label == "text:corpus.txt"
    assert ids.dtype == torch.long and ids.shape == expected.shape
    assert torch.equal(ids, expected)


def test_eval_tokens_refuses_npy(tokenizer, tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.zeros((2, 8), dtype=np.int64))
    with pytest.raises(DataError, match="evaluation needs a text source"):
        data.eval_tokens(tokenizer, str(path))


def test_long_text_tokenizes_without_length_warning(long_text_file):
    """Listens on the transformers logger itself: transformers stops propagating to the root logger
    once its library logging is configured, so pytest's caplog alone would miss the warning."""
    import logging

    from transformers.utils import logging as hf_logging

    records: list[str] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    hf_logger = logging.getLogger("transformers")
    verbosity = hf_logging.get_verbosity()  # loading a model elsewhere in the session may have quietened it
    hf_logging.set_verbosity_warning()
    hf_logger.addHandler(handler)
    try:
        ours, control = make_tokenizer(), make_tokenizer()  # fresh: transformers warns once per tokenizer
        ids, _ = data.eval_tokens(ours, str(long_text_file))
        assert ids.shape[1] > ours.model_max_length
        assert not any("longer than the specified maximum" in m for m in records)
        control(long_text_file.read_text(encoding="utf-8"))  # the warning this test would catch
        assert any("longer than the specified maximum" in m for m in records)
    finally:
        hf_logger.removeHandler(handler)
        hf_logging.set_verbosity(verbosity)