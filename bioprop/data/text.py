"""Character corpora for language modelling: Penn Treebank (files a user has) and an offline
stand-in.

Jaderberg et al. 2017 (§3.2, Table 1) train character-level language models on the Penn
Treebank as Mikolov et al. distribute it (``simple-examples.tgz``: ``data/ptb.char.train.txt``,
``ptb.char.valid.txt``, ``ptb.char.test.txt`` — characters separated by spaces, ``_`` between
words, one sentence per line; about 5.0 M / 0.39 M / 0.44 M characters).  It cannot be
downloaded here, so :func:`ptb_chars` reads the files where a user has them (in
``<data dir>/ptb``, data dir ``$BIOPROP_DATA`` else ``~/.cache/bioprop``, or ``root=``) and
raises :class:`~bioprop.data.mnist.MissingDataError` naming the folder and files otherwise.

:func:`pydoc_chars` is a corpus every Python installation has: the English text of the
Python reference manual's topics (``pydoc_data.topics``, ~0.46 M characters), topics in
sorted order, cut into contiguous training / validation / test parts (90 / 5 / 5 %).  It is
technical prose with code; its numbers are not PTB's and are not compared with them as if
they were.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bioprop.data.mnist import MissingDataError, data_dir

__all__ = ["CharCorpus", "CORPORA", "corpus", "ptb_chars", "pydoc_chars", "read_ptb_chars"]

PTB_FILES = {split: f"ptb.char.{split}.txt" for split in ("train", "valid", "test")}
PTB_SOURCE = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz (its data/ folder)"


@dataclass(frozen=True)
class CharCorpus:
    """A text corpus cut into ``train``, ``valid`` and ``test`` strings.

    ``name`` identifies it in recordings; ``source`` says where the text came from.
    """

    name: str
    train: str
    valid: str
    test: str
    source: str = ""

    def __post_init__(self):
        for split in ("train", "valid", "test"):
            if not getattr(self, split):
                raise ValueError(f"corpus {self.name!r}: the {split} text is empty")

    def split(self, which: str) -> str:
        """The text of ``which`` (``"train"``, ``"valid"`` or ``"test"``)."""
        if which not in ("train", "valid", "test"):
            raise ValueError(f"a corpus split is 'train', 'valid' or 'test', got {which!r}")
        return getattr(self, which)


def read_ptb_chars(path: str | os.PathLike) -> str:
    """One PTB character file as text: tokens are characters, ``_`` is a space between
    words, each line a sentence (joined by newlines, one after the last)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        tokens = line.split()
        if tokens:
            out.append("".join(" " if t == "_" else t for t in tokens))
    return "\n".join(out) + "\n"


def ptb_chars(root: str | os.PathLike | None = None) -> CharCorpus:
    """The Penn Treebank character corpus from ``root`` (default ``<data dir>/ptb``).

    Raises
    ------
    MissingDataError
        When a file is missing: where it was looked for and how to get it.
    """
    folder = Path(root).expanduser() if root is not None else data_dir() / "ptb"
    candidates = [folder, folder / "data"]
    for d in candidates:
        if all((d / f).is_file() for f in PTB_FILES.values()):
            texts = {s: read_ptb_chars(d / f) for s, f in PTB_FILES.items()}
            return CharCorpus("ptb-char", source=str(d), **texts)
    raise MissingDataError(
        f"Penn Treebank character files not found: looked for {', '.join(PTB_FILES.values())} "
        f"in {' and '.join(str(d) for d in candidates)}. Get them from {PTB_SOURCE} and put "
        "them there (or pass root=, or set $BIOPROP_DATA); without them use the offline "
        "corpus 'pydoc' (corpus('pydoc'))."
    )


def pydoc_chars(valid: float = 0.05, test: float = 0.05) -> CharCorpus:
    """Python's reference-manual topics (``pydoc_data.topics``), cut into contiguous parts:
    the first 1 − valid − test of the characters for training, then validation, then test."""
    if not (0 < valid < 0.5 and 0 < test < 0.5 and valid + test < 0.5):
        raise ValueError(
            f"pydoc_chars: valid and test are fractions in (0, 0.5) summing below 0.5, got "
            f"valid={valid!r}, test={test!r}"
        )
    from pydoc_data.topics import topics

    text = "\n".join(topics[k] for k in sorted(topics))
    a = int(len(text) * (1 - valid - test))
    b = int(len(text) * (1 - test))
    return CharCorpus(
        "pydoc", text[:a], text[a:b], text[b:], source="pydoc_data.topics (Python standard library)"
    )


#: corpus name -> (loader, description)
CORPORA = {
    "ptb": (ptb_chars, "Penn Treebank characters (Mikolov's files; not downloadable here)"),
    "pydoc": (pydoc_chars, "Python reference-manual topics (offline, in every Python)"),
}


def corpus(name: str, **options) -> CharCorpus:
    """A corpus by name: ``"ptb"`` (``root=`` optional) or ``"pydoc"``."""
    if name not in CORPORA:
        raise ValueError(f"unknown text corpus {name!r}; choose one of {list(CORPORA)}")
    return CORPORA[name][0](**options)
