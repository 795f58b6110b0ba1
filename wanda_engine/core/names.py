"""The names a reader sees for the texts a run was calibrated and evaluated on.

Run records keep the data loader's short ids ('austen:emma', 'wikitext2:test', 'text:notes.txt'); captions,
tables and cards name the text as a paper would: 'Emma (Austen)', 'WikiText-2 (test split)'. `text_title` is
the one place that turns one into the other; `emphasize` sets the novels' titles in italics for the medium
that a caption is written in (Markdown, LaTeX, or plotly's HTML).
"""
from __future__ import annotations

from pathlib import PurePosixPath

# The janeaustenr package's books (inputs/data.py reads them by these names).
AUSTEN_BOOKS = {"emma": "Emma", "prideprejudice": "Pride and Prejudice", "sensesensibility": "Sense and Sensibility",
                "mansfieldpark": "Mansfield Park", "northangerabbey": "Northanger Abbey", "persuasion": "Persuasion"}
_HUB_TEXTS = {"wikitext2": "WikiText-2", "c4": "C4"}
_ITALIC = {"markdown": ("*", "*"), "latex": ("\\emph{", "}"), "html": ("<i>", "</i>")}


def text_title(label: str) -> str:
    """A text's id as a reader reads it: 'austen:prideprejudice' -> 'Pride and Prejudice (Austen)',
    'wikitext2:test' -> 'WikiText-2 (test split)', 'text:notes.txt' -> 'notes.txt',
    'tokens:calib.npy' -> 'the token file calib.npy'; anything else unchanged (without its folders)."""
    kind, sep, name = str(label or "").partition(":")
    if sep and kind == "austen" and name in AUSTEN_BOOKS:
        return f"{AUSTEN_BOOKS[name]} (Austen)"
    if sep and kind in _HUB_TEXTS and name:
        return f"{_HUB_TEXTS[kind]} ({name} split)"
    if sep and kind == "text" and name:
        return name
    if sep and kind == "tokens" and name:
        return f"the token file {name}"
    text = str(label or "")
    if "/" in text or "\\" in text:  # a file given by its path: its name says enough
        return PurePosixPath(text.replace("\\", "/")).name or text
    return text


def emphasize(text: str, markup: str) -> str:
    """`text` with every novel's title that `text_title` wrote set in italics for `markup` ('markdown', 'latex'
    or 'html'): '... of Emma (Austen)' -> '... of \\emph{Emma} (Austen)'. Apply it after escaping the text."""
    start, end = _ITALIC[markup]
    for title in AUSTEN_BOOKS.values():
        text = text.replace(f"{title} (Austen)", f"{start}{title}{end} (Austen)")
    return text
