import pytest
import torch

from distill.data.base import load_dataset
from distill.data.module import DataModule
from distill.models.zoo import create_model

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def synth():
    """A small learnable dataset: 4 classes of 1×28×28 images."""
    return load_dataset("synthetic", n_train=256, n_test=128, num_classes=4)


@pytest.fixture
def dm(synth):
    return DataModule(synth, batch_size=32, val_size=32, seed=0)


@pytest.fixture
def tiny():
    def make(width: int = 4, seed: int = 0):
        torch.manual_seed(seed)
        return create_model("cnn", num_classes=4, in_channels=1, width=width, blocks=1)

    return make
