"""Character-level language modelling: a text read as B parallel streams, state carried.

Jaderberg et al. 2017, §3.2 (Table 1, Penn Treebank): an LSTM reads characters one at a time
and predicts the next one; training is truncated BPTT along a continuous stream, the state
carried from one unroll to the next, and DNI puts a synthetic gradient at the end of every
unroll.  The metric is the test set's cross-entropy in bits per character (BPC),

    BPC = −(1 / (N ln 2)) Σ_t ln p(c_{t+1} | c_1 … c_t).

:class:`CharLMTask` is a stream task (``stateful``): the training text is cut into
``batch`` equal contiguous segments; batch k holds characters [p + k·n, p + (k+1)·n) of
every segment (one-hot inputs, the next character's index as target), p a start offset drawn
once from the run's data generator.  Each batch *follows* the previous one (the loop starts
it from the previous final state) and *continues* (the end of its last window is a boundary
where a synthetic gradient enters); when a segment is used up the streams restart at its
beginning from s = 0.  :meth:`CharLMTask.evaluate` runs the circuit over a whole held-out
split as one stream (every character scored once, with all its context) and returns BPC.

The vocabulary is every character of the corpus (training, validation and test: the
alphabet, not the text, as is usual for character models); its order is sorted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bioprop.data.text import CharCorpus, corpus
from bioprop.recurrent.tasks import LN2, Batch, Curriculum, SequenceData, SequenceTask

__all__ = ["CharLMTask", "StreamBatch", "language_data"]


@dataclass
class StreamBatch(Batch):
    """A :class:`Batch` of a text stream; ``position`` is the offset of its first character
    within each stream's segment."""

    position: int = 0


class CharLMTask(SequenceTask):
    """Predict the next character of a corpus (:mod:`bioprop.data.text`).

    Parameters
    ----------
    text
        A :class:`~bioprop.data.text.CharCorpus` or a corpus name (``"pydoc"``, ``"ptb"``).
    **options
        Passed to :func:`bioprop.data.text.corpus` with a name (e.g. ``root=`` for PTB).
    """

    stateful = True
    loss_name = "next-character cross-entropy (summed over steps, mean over streams)"

    def __init__(self, text: CharCorpus | str = "pydoc", **options):
        if isinstance(text, str):
            text = corpus(text, **options)
        elif options:
            raise TypeError(f"CharLMTask: options {sorted(options)} apply to a corpus name only")
        if not isinstance(text, CharCorpus):
            raise TypeError(
                f"CharLMTask needs a CharCorpus or a corpus name, got {type(text).__name__}"
            )
        self.corpus = text
        self.vocabulary = sorted(set(text.train) | set(text.valid) | set(text.test))
        self._index = {c: i for i, c in enumerate(self.vocabulary)}
        self.codes = {s: self.encode(text.split(s)) for s in ("train", "valid", "test")}
        self.name = f"char-lm:{text.name}"
        self.n_in = self.n_out = len(self.vocabulary)

    def encode(self, text: str) -> torch.Tensor:
        """Character indices (int64) of ``text``; a character outside the vocabulary is an
        error naming it."""
        try:
            return torch.tensor([self._index[c] for c in text], dtype=torch.int64)
        except KeyError as exc:
            raise ValueError(
                f"character {exc.args[0]!r} is not in the vocabulary of corpus {self.corpus.name!r}"
            ) from None

    def one_hot(self, codes: torch.Tensor) -> torch.Tensor:
        """x_t = e_{c_t}: one-hot rows (…, V) as float."""
        return F.one_hot(codes, self.n_in).float()

    def sample(
        self, n: int, batch: int, generator: torch.Generator, after: StreamBatch | None = None
    ) -> StreamBatch:
        """The next ``n`` characters of each of ``batch`` streams (after ``after``, or from
        a start offset drawn from ``generator``)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"unroll length n must be a positive integer, got {n!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch size must be a positive integer, got {batch!r}")
        codes = self.codes["train"]
        seg = len(codes) // batch
        if seg < n + 1:
            raise ValueError(
                f"{self.name}: {len(codes)} training characters in {batch} streams leave "
                f"{seg} per stream, fewer than one unroll of {n} + 1; use fewer streams or a "
                "shorter unroll"
            )
        follows = after is not None and after.x.shape[1] == batch
        pos = after.position + after.length if follows else None
        if pos is None or pos + n + 1 > seg:
            follows = False
            pos = int(torch.randint(0, seg - n, (1,), generator=generator)) if after is None else 0
        starts = torch.arange(batch) * seg + pos
        idx = starts[None, :] + torch.arange(n + 1)[:, None]  # (n + 1, batch)
        c = codes[idx]
        return StreamBatch(
            self.one_hot(c[:-1]),
            c[1:],
            torch.ones(n),
            n,
            follows=follows,
            continues=True,
            position=pos,
        )

    @torch.no_grad()
    def evaluate(self, circuit, split: str = "valid", chunk: int = 256) -> float:
        """BPC of ``circuit`` on the whole ``split`` read as one stream from s = 0."""
        if split not in self.codes:
            raise ValueError(f"{self.name}: split must be one of {list(self.codes)}, got {split!r}")
        codes = self.codes[split]
        ref = circuit.pathways["hidden->output"].weight
        state = circuit.initial_state(1)
        total = 0.0
        for a in range(0, len(codes) - 1, chunk):
            c = codes[a : min(a + chunk + 1, len(codes))]
            x = self.one_hot(c[:-1])[:, None, :].to(dtype=ref.dtype, device=ref.device)
            state, logits, _ = circuit.unroll(state, x)
            y = c[1:].to(ref.device)
            total += float(F.cross_entropy(logits[:, 0], y, reduction="sum"))
        return total / (LN2 * max(len(codes) - 1, 1))


def language_data(task: CharLMTask, unroll: int) -> SequenceData:
    """What :func:`bioprop.train` takes for a language model: the task read in batches of
    ``unroll`` characters per stream (a fixed length: a one-level curriculum that never
    grows, ``n_start = n_max = unroll``; ``max_solved`` has no meaning here — the result is
    the held-out BPC in ``run.history``)."""
    if not isinstance(task, CharLMTask):
        raise TypeError(f"language_data needs a CharLMTask, got {type(task).__name__}")
    if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
        raise ValueError(
            f"unroll must be a positive integer (characters per batch), got {unroll!r}"
        )
    return SequenceData(
        task, Curriculum(n_start=unroll, threshold=math.ulp(0.0), window=1, n_max=unroll)
    )
