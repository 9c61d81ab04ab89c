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
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """PyTorch work in this block runs on the calling thread alone (the setting is this
    thread's; PyTorch keeps the last value for threads that start later, so it is put back)."""
    previous = torch.get_num_threads()
    if previous != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            torch.set_num_threads(previous)
