"""The labels of observed states: learned from data, enforced on new data, saved as JSON.

Models whose states are observed symbols (:class:`~modeshift.models.MarkovChainMixture`,
:class:`~modeshift.models.MarkovJumpProcess`) index their parameters by state code;
``states_[code]`` is the label. Learned labels are the data's distinct symbols, sorted
when they can be (so integer states 0 .. n-1 keep their codes, as scikit-learn's
``classes_`` do), otherwise in order of first appearance.

>>> seqs = encode_states([["b", "a"], ["c", "a"]])
>>> seqs.vocabulary.symbols, seqs.codes.tolist()
(('a', 'b', 'c'), [1, 0, 2, 0])
>>> encode_states([[2, 0]], n_states=4).vocabulary.symbols
(0, 1, 2, 3)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from modeshift.data import Sequences, as_sequences
from modeshift.symbols import Vocabulary

__all__ = ["VocabularyFromShards", "encode_states", "labels_from_json", "labels_to_json"]


class VocabularyFromShards:
    """The constants hooks of :class:`~modeshift.models.capabilities.ShardableFit` for a model of
    symbols whose ``vocabulary_`` is learned from the data: the symbols of each shard (or the
    model's vocabulary, if it has one), merged in shard order, so in order of first appearance
    as in memory for the shards one after another."""

    def _em_constants(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> tuple[Hashable, ...]:
        if "vocabulary_" in self.__dict__:
            return self.__dict__["vocabulary_"].symbols
        return as_sequences(data, lengths, symbols=True, **columns).vocabulary.symbols

    @staticmethod
    def _em_merge_constants(first: tuple[Hashable, ...], then: tuple[Hashable, ...]) -> tuple[Hashable, ...]:
        return Vocabulary.learn([*first, *then]).symbols

    def _em_set_constants(self, symbols: tuple[Hashable, ...]) -> None:
        self.vocabulary_ = Vocabulary(symbols)


def encode_states(
    data: Any,
    states: Sequence[Hashable] | None = None,
    *,
    n_states: int | None = None,
    lengths: Sequence[int] | None = None,
    times: Any = None,
    **columns: Any,
) -> Sequences:
    """``data`` (any form :func:`~modeshift.data.as_sequences` reads as symbols, with its
    ``lengths``, ``times`` and ``columns``) as state codes under the labels ``states`` (unseen
    labels are errors), or under labels learned from ``data``: ``n_states`` of them when given,
    in which case integer data in 0 .. n_states - 1 are labelled 0 .. n_states - 1 even if some
    never occur."""
    if states is not None:
        return as_sequences(data, lengths, vocabulary=Vocabulary(tuple(states)), times=times, **columns)
    seqs = as_sequences(data, lengths, symbols=True, times=times, **columns)
    seen = seqs.vocabulary.symbols
    try:
        labels = tuple(sorted(seen))
    except TypeError:
        labels = seen
    if n_states is not None and len(labels) != n_states:
        integers = all(isinstance(s, int | np.integer) and not isinstance(s, bool | np.bool_) for s in labels)
        if len(labels) > n_states or not integers or min(labels) < 0 or max(labels) >= n_states:
            shown = ", ".join(repr(s) for s in labels[:10]) + (", ..." if len(labels) > 10 else "")
            raise ValueError(
                f"n_states={n_states}, but the data have {len(labels)} distinct states ({shown}); "
                f"label the states 0 .. {n_states - 1}, or leave n_states=None"
            )
        labels = tuple(range(n_states))
    return seqs.encoded(Vocabulary(labels))


def labels_to_json(states: Sequence[Hashable]) -> list[Any]:
    """State labels as JSON values (numbers, strings, booleans, None; tuples become lists)."""

    def plain(label: Any) -> Any:
        if isinstance(label, np.generic):
            label = label.item()
        if isinstance(label, tuple):
            return [plain(part) for part in label]
        if label is None or isinstance(label, str | int | float | bool):
            return label
        raise ValueError(f"state label {label!r} ({type(label).__name__}) cannot be saved; use strings or numbers")

    return [plain(label) for label in states]


def labels_from_json(values: Sequence[Any]) -> tuple[Hashable, ...]:
    """The labels written by :func:`labels_to_json` (lists back to tuples)."""

    def label(value: Any) -> Hashable:
        return tuple(label(part) for part in value) if isinstance(value, list) else value

    return tuple(label(value) for value in values)
