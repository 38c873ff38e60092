"""What feedback collection tells the layers above it, without importing them.

annotate knows nothing of training; the loop (rounds closing, chains, promotion) registers its
listeners here once at start-up (training.apps) and annotate calls them when something happens.
Listeners run after the transaction that caused the event has committed.
"""

from __future__ import annotations

from collections.abc import Callable

PairCompletedListener = Callable[[int], None]  # the round id of the pair that completed

_pair_completed: list[PairCompletedListener] = []


def on_pair_completed(listener: PairCompletedListener) -> None:
    """Register a listener for "a pair of this round got its last required judgment"."""
    if listener not in _pair_completed:
        _pair_completed.append(listener)


def pair_completed(round_id: int) -> None:
    for listener in list(_pair_completed):
        listener(round_id)
