"""FeatureTap: the one way intermediate features are read — forward hooks on modules named by their path."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from distill.errors import ConfigError
from distill.registry import suggest


class FeatureTap:
    """Records the outputs of named submodules on every forward pass.

    >>> tap = FeatureTap(model, ["layer2", "layer3"])
    >>> logits = model(x); feats = tap.features   # {"layer2": (B, C, H, W), ...}
    >>> tap.close()                                 # or use it as a context manager

    Names are validated up front (an unknown name lists the real ones). Features are kept with their autograd
    graph, so a loss on them trains the model; the dict is replaced on every forward.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        for name in names:
            if name not in modules or name == "":
                raise ConfigError(suggest(name, [n for n in modules if n], f"layer of {type(model).__name__}"))
        self.names = list(names)
        self.features: dict[str, Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in self.names]

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor | tuple) -> None:
            self.features[name] = output[0] if isinstance(output, tuple) else output

        return hook

    def __getitem__(self, name: str) -> Tensor:
        return self.features[name]

    def get(self) -> list[Tensor]:
        """The features of the last forward in the order the names were given."""
        return [self.features[n] for n in self.names]

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.features.clear()

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@torch.no_grad()
def probe_shapes(model: nn.Module, names: Sequence[str], input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Shapes (without the batch dimension) of the named features, from a dry run on a zero batch of 2."""
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    with FeatureTap(model, names) as tap:
        model(torch.zeros(2, *input_shape, device=device))
        shapes = {n: tuple(tap[n].shape[1:]) for n in names}
    model.train(was_training)
    return shapes
