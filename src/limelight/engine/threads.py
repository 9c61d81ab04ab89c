"""CPU threads for PyTorch: the engine's thread computes on all of them, others on one.

PyTorch's CPU kernels run on OpenMP, and GNU OpenMP keeps a team of worker threads for
every thread that starts a parallel region.  Once it manages more threads than there are
cores, it stops letting idle workers spin between regions, so every small parallel kernel
(a decode step is a few hundred of them) first waits for its workers to wake up.  One more
team anywhere in the process is enough: SmolLM2 decoded 69 tok/s in a thread that had
loaded the model itself and 47 tok/s in one whose model had been loaded (with parallel
work) by the main thread; the int4 and int8 kernels alone took twice as long.

So the engine loads and steps in one thread (`AsyncEngine`), and other PyTorch work in
the process (the memory embedder) runs inside `one_thread()`, which starts no team.

Work that holds a core for a while beside the engine (speech synthesis, embedding
memories) says so with `lend_core()`, and the engine computes its steps on one thread
fewer meanwhile (`step_threads`): a parallel region on every core waits at its end for
the thread that shares a core with the other work.  SmolLM2 int4, eager, with Piper
synthesising on one of the two cores: a decode step of one row took 29.9 ms on two
threads and 18.7 on one (11.6 on two without Piper), of four rows 36.8 and 20.7.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch

_lent = 0  # cores that other work in the process holds now (`lend_core`)
_lent_lock = threading.Lock()


@contextmanager
def lend_core() -> Iterator[None]:
    """The calling thread computes on a core of its own in this block (speech synthesis):
    the engine steps on the others meanwhile."""
    global _lent
    with _lent_lock:
        _lent += 1
    try:
        yield
    finally:
        with _lent_lock:
            _lent -= 1


def step_threads(total: int, lent: int | None = None) -> int:
    """The threads an engine step computes on: `total`, or one fewer while other work
    holds a core (`lend_core`, or `lent` cores if given); at least one."""
    return max(1, total - min(_lent if lent is None else lent, 1))


def step_thread_counts(total: int) -> list[int]:
    """Every value `step_threads(total)` takes (compiled steps are warmed up for each)."""
    return sorted({step_threads(total, lent) for lent in (0, 1)})


@contextmanager
def at_most(threads: int) -> Iterator[None]:
    """PyTorch work in this block runs on at most `threads` threads (the setting is this
    thread's; PyTorch keeps the last value for threads that start later, so it is put back)."""
    previous = torch.get_num_threads()
    if previous > threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if previous > threads:
            torch.set_num_threads(previous)


def one_thread() -> AbstractContextManager[None]:
    """PyTorch work in this block runs on the calling thread alone."""
    return at_most(1)
