"""Fixtures of the evaluation tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the tiny models gain nothing from more, and on a busy 2-core machine threads that
    wait on each other at every op make each call many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
