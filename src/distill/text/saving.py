"""Text models as distill model directories: ``model.safetensors`` + ``model.json`` (sha256 checked on load).

The spec names the architecture without pickle or remote code: a Hugging Face model by its configuration
(``config.to_dict()``, rebuilt with ``AutoConfig.for_model`` and ``from_config``: nothing is downloaded), a
TextCNN or BiLSTM by its constructor arguments. This module registers the ``text`` model format, so
:func:`distill.artifacts.load_model` hands specs with ``task: text`` to :func:`text_model_from_spec`, and
``distill evaluate``, ``sign``/``verify`` and the model registry treat text models like image ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from distill.artifacts import load_weights, register_format, save_model
from distill.errors import CheckpointError
from distill.text.models import BiLSTMClassifier, HFClassifier, TextCNN, offline

SMALL = {"cnn": TextCNN, "bilstm": BiLSTMClassifier}


def text_model_spec(model: nn.Module, classes: Sequence[str]) -> dict[str, Any]:
    """What :func:`text_model_from_spec` needs to rebuild ``model`` (weights aside)."""
    base = {"task": "text", "num_classes": len(classes), "classes": [str(c) for c in classes]}
    if isinstance(model, HFClassifier):
        cfg = model.config.to_dict()
        cfg.pop("_name_or_path", None)  # a path on the machine that trained it says nothing about the model
        return {**base, "model": "hf", "hf_config": cfg}
    for name, cls in SMALL.items():
        if type(model) is cls:
            return {**base, "model": name, "kwargs": dict(model.init_kwargs)}
    raise CheckpointError(
        f"cannot save a {type(model).__name__} as a text model; expected HFClassifier, TextCNN or BiLSTM"
    )


def save_text_model(
    directory: str | Path, model: nn.Module, classes: Sequence[str], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (and ``extra`` fields, e.g. the method) as a model directory; returns the weights' path."""
    return save_model(Path(directory), model, {**text_model_spec(model, classes), **(extra or {})})


def text_model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """An untrained model of the architecture ``spec`` records (the caller loads the weights)."""
    kind = spec.get("model")
    if kind == "hf":
        offline()
        from transformers import AutoConfig, AutoModelForSequenceClassification

        cfg = dict(spec["hf_config"])
        model_type = cfg.pop("model_type", None)
        if not model_type:
            raise CheckpointError("a text model spec of kind 'hf' needs hf_config.model_type")
        config = AutoConfig.for_model(model_type, **cfg)
        return HFClassifier(AutoModelForSequenceClassification.from_config(config))
    if kind in SMALL:
        return SMALL[kind](**spec["kwargs"])
    raise CheckpointError(f"unknown text model kind {kind!r}; expected 'hf', {', '.join(map(repr, SMALL))}")


def _load_format(directory: Path, spec: dict[str, Any], device: Any) -> nn.Module:
    model = text_model_from_spec(spec)
    load_weights(model, Path(directory) / "model.safetensors", what=f"text model {spec.get('model')} ({directory})")
    return model.to(device)


register_format("text", _load_format)  # load_model of a model.json with task: text
