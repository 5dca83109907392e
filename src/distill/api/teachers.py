"""Teachers: a saved model checked against the data and adapted to its input, or an ensemble of them (part of
:mod:`distill.api`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from torch import nn

from distill.artifacts import load_model
from distill.data.base import ImageData
from distill.distillers.multi_teacher import MultiTeacher
from distill.engine import distributed as D
from distill.errors import CheckpointError
from distill.models.preprocess import adapt_input


def load_teacher(
    path: str | Path, data: ImageData, public_key: str | Path | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    model, spec = load_model(Path(path), public_key=public_key)
    grey_to_rgb = data.in_channels == 1 and spec["in_channels"] == 3 and "preprocessing" in spec
    if spec["num_classes"] != data.num_classes or (spec["in_channels"] != data.in_channels and not grey_to_rgb):
        raise CheckpointError(
            f"teacher {path} was made for {spec['num_classes']} classes x {spec['in_channels']} channels, but "
            f"{data.name} has {data.num_classes} classes x {data.in_channels} channels"
        )
    # the teacher's own normalisation, size and channel order (model.json), applied to the data's batches
    note = adapt_input(model, spec, data, f"teacher {path}")
    if note and D.is_main():
        print(note, file=sys.stderr)
    return model, spec


def load_ensemble(dirs: list[str], data: ImageData, public_key: str | Path | None = None) -> nn.Module:
    """Several saved teachers as one frozen :class:`~distill.distillers.multi_teacher.MultiTeacher`.

    ``multi_kd`` distils from each member at its own temperature; any other method sees the ensemble's averaged
    distribution (at T = 1, then softened by the method's own temperature).
    """
    return MultiTeacher([load_teacher(d, data, public_key)[0] for d in dirs])
