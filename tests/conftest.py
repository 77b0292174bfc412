"""Fixtures several test files share."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: two threads on a busy 2-core machine (a notebook kernel or
    a training run beside the tests) made tensor-heavy tests many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_generator():
    """The small randomly initialised StyleGAN2 of the smoke profile (``zoo.generator("random-tiny")``)."""
    from gatlib import zoo

    return zoo.generator("random-tiny", seed=0)
