"""One helper: run a loop of many tiny tensor operations on one thread."""

from __future__ import annotations

import functools

import torch


def single_threaded(fn):
    """Run ``fn`` with torch limited to one thread, then restore the setting.

    The classical methods loop over thousands of operations on tensors of a
    few thousand elements. Handing each of them to a second thread costs more
    than it saves, and on a busy machine a lot more: waiting for the other
    thread to be scheduled made region growing twenty times slower in CPU
    time on the course's shared 2-core machine.
    """

    @functools.wraps(fn)
    def run(*args, **kwargs):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return run
