"""Shared fixtures: tiny random-initialised models built from configs (see `tests/builders.py`)."""

from __future__ import annotations

import pytest
import torch

from emovec.models import LoadedModel
from tests.builders import make_gpt2, make_llama


@pytest.fixture(scope="session")
def tiny_llama() -> LoadedModel:
    return make_llama()


@pytest.fixture(scope="session")
def tiny_gpt2() -> LoadedModel:
    return make_gpt2()


@pytest.fixture()
def single_thread():
    """One torch thread for a test on tiny models: on a loaded 2-core machine, two threads spin against
    other processes and make 64-wide matmuls ~20× slower; tiny models gain nothing from threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


