"""A zero-shot task built from text the project already has, so that zero-shot accuracy works offline on the
embedded default: last-word prediction on held-out passages of the default evaluation novel, *Pride and
Prejudice* (LAMBADA-style, Paperno et al. 2016: the model reads a passage and must predict its final word; the
answer counts when every token of the word is the model's greedy choice, lm-eval's `acc` for loglikelihood tasks).

The passages are paragraphs of the novel's second half (the perplexity windows read its beginning: held out from
every evaluation that reads fewer than half the novel, the defaults' 10 × 512 tokens among them) of 40 to 120 words
whose last word is a plain word of three letters or more, PASSAGES of them drawn with a fixed seed. Unlike LAMBADA,
no reader filtered them for needing the whole passage: a share is guessable from the last sentence alone.

`ensure_task` writes the task, an lm-eval YAML and its JSONL, under the cache (`<cache>/tasks/austen_lastword/`),
once, never downloading anything; `tasks.check_tasks` resolves the name to it.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.paths import cache_dir
from ..store.run_store import atomic_write_bytes, atomic_write_json

LASTWORD_TASK = "austen_lastword"
VERSION = 1  # of the passages' selection: a change rebuilds the task files
SEED = 0
PASSAGES = 200
MIN_WORDS, MAX_WORDS = 40, 120
HELD_OUT_FROM = 0.5  # the passages come from this fraction of the novel on
_LAST_WORD = re.compile(r"(?<=\s)([A-Za-z]{3,})[^\sA-Za-z0-9]*$")  # a plain word ending the paragraph, then punctuation


@dataclass(frozen=True)
class Passage:
    context: str  # the passage up to its last word, without the space before it
    target: str  # ' word': the space the tokenizer reads with the word
    offset: int  # where the paragraph starts in the novel (characters)


def passages(text: str, count: int = PASSAGES, seed: int = SEED, start: float = HELD_OUT_FROM) -> list[Passage]:
    """`count` passages drawn with `seed` from the paragraphs of `text` after `start` of its length (all of them
    when fewer qualify), in the order they appear."""
    begin = int(len(text) * start)
    candidates = []
    for match in re.finditer(r"\S[\s\S]*?(?=\n\s*\n|\Z)", text[begin:]):
        paragraph = " ".join(match.group().split())
        words = paragraph.split(" ")
        last = _LAST_WORD.search(paragraph)
        if last is None or not MIN_WORDS <= len(words) <= MAX_WORDS or paragraph.lower().startswith("chapter"):
            continue
        candidates.append(Passage(paragraph[:last.start(1) - 1], " " + last.group(1), begin + match.start()))
    if len(candidates) <= count:
        return candidates
    chosen = np.random.default_rng(seed).choice(len(candidates), size=count, replace=False)
    return [candidates[i] for i in sorted(chosen)]


YAML = """\
# {description}
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{target}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: {version}
"""


def write_task(folder: Path, name: str, items: Sequence[Passage], description: str, version: int = VERSION) -> Path:
    """An lm-eval loglikelihood task in `folder`: `<name>.yaml` and its data `<name>.jsonl` (one passage a line,
    its context and target); returns the YAML's path."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in items)
    atomic_write_bytes(folder / f"{name}.jsonl", lines.encode())
    yaml = folder / f"{name}.yaml"
    atomic_write_bytes(yaml, YAML.format(description=description, name=name, data=f"{name}.jsonl",
                                         version=version).encode())
    return yaml


def description(source: str, novel: str, count: int) -> str:
    return (f"last-word prediction on {count} held-out passages of {source} (the second half of the novel; "
            f"{MIN_WORDS}-{MAX_WORDS} words each; seed {SEED}), built by the project from {novel}")


def task_folder(root: Path | None = None) -> Path:
    """Where the task's files are written: `<cache>/tasks/austen_lastword/` by default."""
    return (root or cache_dir() / "tasks") / LASTWORD_TASK


def said() -> str:
    """The task in one sentence, for a page."""
    return (f"**{LASTWORD_TASK}**: LAMBADA-style last-word prediction on {PASSAGES} passages of *Pride and Prejudice* "
            f"({MIN_WORDS}–{MAX_WORDS} words each, from the novel's second half: held out from the perplexity windows, "
            f"which read its beginning; seed {SEED}); correct when every token of the last word is the model's "
            f"greedy choice. Written by the project under {task_folder()} from Debian's r-cran-janeaustenr, "
            "never downloaded: it works offline.")


def ensure_task(root: Path | None = None) -> Path:
    """The task's YAML under `root` (default: the cache's tasks folder), written once from the default evaluation
    novel; written again when the novel's text or this selection changed. Never downloads."""
    from ..inputs.data import load_text  # here: this module stays torch-free for the app's pages

    folder = task_folder(root)
    text, label = load_text("default", "eval")
    stamp = {"version": VERSION, "seed": SEED, "passages": PASSAGES, "source": label,
             "source_sha256": hashlib.sha256(text.encode()).hexdigest()}
    manifest, yaml = folder / "manifest.json", folder / f"{LASTWORD_TASK}.yaml"
    try:
        if yaml.is_file() and json.loads(manifest.read_text()) == stamp:
            return yaml
    except (OSError, ValueError):
        pass
    items = passages(text)
    yaml = write_task(folder, LASTWORD_TASK, items, description(label, "Debian's r-cran-janeaustenr", len(items)))
    atomic_write_json(manifest, stamp)
    return yaml
