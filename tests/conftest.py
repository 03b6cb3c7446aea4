"""Fixtures shared by several test files."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def restore_num_threads() -> Iterator[int]:
    """Save torch's intra-op thread count; restore it after the test, also when it fails.

    Yields the saved count. For tests of code that sets the thread count itself (the command
    line owns its process) or that set it on purpose.
    """
    threads = torch.get_num_threads()
    yield threads
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread(restore_num_threads: int) -> None:
    """Run the test on one torch thread, then restore the count the session had.

    Tiny models train fastest on one thread, and the test machine is shared.
    """
    torch.set_num_threads(1)
