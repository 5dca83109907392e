"""Pruning: unstructured magnitude pruning (``torch.nn.utils.prune``) and structural channel pruning (torch-pruning).

* :func:`unstructured_prune` zeroes the smallest-magnitude weights of every Conv/Linear layer, per layer or over
  all layers at once (global), in one shot or over a schedule of steps; :func:`make_permanent` folds the masks into
  the weights. The model keeps its shapes: the gain is sparsity (compressible files, sparse kernels), not speed.
* :func:`structured_prune` removes whole channels through torch-pruning's dependency graph, so every layer that
  reads a pruned channel shrinks with it; the result is a smaller dense model that runs faster everywhere.

The final classifier is never pruned (its outputs are the classes). A structurally pruned model no longer matches
``create_model(name, **kwargs)``; :func:`save_pruned` records the new shapes of the layers that changed in
``model.json`` (an *architecture patch*) next to the safetensors weights, and :func:`load_pruned` rebuilds it by
creating the base model and swapping in layers of the recorded shapes — without torch-pruning and without pickle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import prune as tprune

# saving and loading a pruned model (distill.compress.patch): importable from here, as before
from distill.compress.patch import (
    PATCH_FORMAT,  # noqa: F401
    apply_patch,  # noqa: F401
    architecture_patch,  # noqa: F401
    build_from_spec,  # noqa: F401
    folded_state,  # noqa: F401
    load_pruned,  # noqa: F401
    read_spec,  # noqa: F401
    save_pruned,  # noqa: F401
)
from distill.errors import ConfigError, DistillError, UnknownNameError
from distill.models.adapters import tap_names
from distill.registry import suggest
from distill.report.bench import latency_ms

IMPORTANCES = ("l1", "l2", "taylor", "random")
SCHEDULES = ("linear", "cubic")
PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def check_ratio(name: str, value: float) -> None:
    """A pruning ratio must be in [0, 1): pruning everything leaves no model."""
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value!r}")


def output_layer(model: nn.Module) -> str:
    """Name of the layer whose outputs are the classes: the model's ``classifier``, else its last Linear/Conv."""
    name = tap_names(model).classifier
    if name:
        return name
    last = [n for n, m in model.named_modules() if isinstance(m, PRUNABLE)]
    if not last:
        raise DistillError(f"{type(model).__name__} has no Conv or Linear layer to prune")
    return last[-1]


def resolve_layers(model: nn.Module, names: Iterable[str]) -> list[nn.Module]:
    """Modules by dotted name; an unknown name is refused with the nearest real ones."""
    modules = dict(model.named_modules())
    out = []
    for name in names:
        if name not in modules or not name:
            raise UnknownNameError(suggest(str(name), [n for n in modules if n], "layer to ignore"))
        out.append(modules[name])
    return out


def prunable_layers(model: nn.Module, ignore: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """Conv/Linear layers to prune: all but the classifier and the modules under any name in ``ignore``."""
    skipped = {id(m) for top in resolve_layers(model, [output_layer(model), *(ignore or ())]) for m in top.modules()}
    return {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE) and id(m) not in skipped}


def sparsity_schedule(amount: float, steps: int, schedule: str = "linear") -> list[float]:
    """Cumulative sparsity after each of ``steps`` steps; ``cubic`` prunes fast first (Zhu & Gupta, 2017)."""
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; expected one of {list(SCHEDULES)}")
    if schedule == "linear":
        return [amount * k / steps for k in range(1, steps + 1)]
    return [amount * (1 - (1 - k / steps) ** 3) for k in range(1, steps + 1)]


# --- unstructured ----------------------------------------------------------------------------------------------------


def unstructured_prune(
    model: nn.Module,
    amount: float,
    *,
    scope: str = "layer",
    steps: int = 1,
    schedule: str = "linear",
    ignore: Sequence[str] | None = None,
    between: Callable[[int], None] | None = None,
    permanent: bool = True,
) -> dict[str, Any]:
    """Zero the ``amount`` fraction of smallest-magnitude weights, in place; returns the achieved sparsity.

    Args:
        amount: fraction of weights to remove, in [0, 1): of each layer (``scope="layer"``) or of all layers
            together (``scope="global"``, so per-layer sparsity varies).
        steps: reach ``amount`` over this many steps following ``schedule``; ``between(step)`` runs after each
            step (fine-tuning, typically) while the masks are still attached, so pruned weights stay zero.
        ignore: extra layer names to leave dense (the classifier always is).
        permanent: fold the masks into the weights (``prune.remove``); False keeps them for a later fine-tune, then
            call :func:`make_permanent`.
    """
    check_ratio("amount", amount)
    if scope not in ("layer", "global"):
        raise ConfigError(f"scope must be 'layer' or 'global', got {scope!r}")
    layers = prunable_layers(model, ignore)
    if not layers:
        raise DistillError("no Conv/Linear layer is left to prune once the classifier and ignored layers are skipped")
    sizes = {n: m.weight.numel() for n, m in layers.items()}
    done = dict.fromkeys(layers, 0)  # weights pruned so far per layer (layer scope)
    done_total = 0
    for k, target in enumerate(sparsity_schedule(amount, steps, schedule)):
        if scope == "layer":
            for name, m in layers.items():
                want = round(target * sizes[name])  # counts, not fractions: exact to the weight
                tprune.l1_unstructured(m, "weight", amount=want - done[name])  # of the still-unpruned weights
                done[name] = want
        else:
            want = round(target * sum(sizes.values()))
            params = [(m, "weight") for m in layers.values()]
            tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=want - done_total)
            done_total = want
        if between is not None:
            between(k)
    report = sparsity_report(model, layers)
    report.update(kind="unstructured", scope=scope, amount=amount, steps=steps, schedule=schedule)
    if permanent:
        make_permanent(model)
    return report


def sparsity_report(model: nn.Module, layers: dict[str, nn.Module] | None = None) -> dict[str, Any]:
    """Per-layer and overall fraction of zero weights (from the masks while they are attached, else the weights)."""
    layers = layers if layers is not None else {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE)}
    rows: dict[str, dict[str, Any]] = {}
    for name, m in layers.items():
        mask = getattr(m, "weight_mask", None)
        zero = int((mask == 0).sum()) if mask is not None else int((m.weight == 0).sum())
        n = m.weight.numel()
        rows[name] = {"weights": n, "pruned": zero, "sparsity": zero / n}
    total = sum(r["weights"] for r in rows.values())
    return {"layers": rows, "sparsity": sum(r["pruned"] for r in rows.values()) / max(1, total)}


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every pruning mask into its weight and drop the re-parametrisation hooks."""
    for m in model.modules():
        for name in [k[: -len("_orig")] for k, _ in list(m.named_parameters(recurse=False)) if k.endswith("_orig")]:
            tprune.remove(m, name)
    return model


# --- structural ------------------------------------------------------------------------------------------------------


def require_torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError as e:
        raise DistillError("structural pruning needs torch-pruning; pip install 'distill[compress]'") from e
    return torch_pruning


def _importance(name: str) -> Any:
    tp = require_torch_pruning()

    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    if name == "random":
        return tp.importance.RandomImportance()
    raise ConfigError(f"unknown importance {name!r}; expected one of {list(IMPORTANCES)}")


def channel_counts(model: nn.Module) -> dict[str, int]:
    """Output channels (features) of every Conv/Linear layer."""
    return {
        n: m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
        for n, m in model.named_modules()
        if isinstance(m, PRUNABLE)
    }


def structured_prune(
    model: nn.Module,
    example_inputs: Tensor,
    *,
    ratio: float = 0.5,
    importance: str = "l1",
    ignore: Sequence[str] | None = None,
    global_pruning: bool = False,
    steps: int = 1,
    target_params: int | None = None,
    target_latency_ms: float | None = None,
    latency_batch: int = 1,
    max_ratio: float = 0.9,
    grad_batches: Sequence[tuple[Tensor, Tensor]] = (),
    round_to: int | None = None,
    between: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Remove channels in place through torch-pruning's dependency graph; returns what changed.

    Args:
        example_inputs: a batch of real-shaped inputs (on the model's device) to trace the graph with.
        ratio: fraction of each prunable layer's output channels to remove, in [0, 1).
        importance: ``l1`` / ``l2`` (filter-norm), ``taylor`` (|weight · grad|, needs ``grad_batches`` of
            ``(x, y)``) or ``random``.
        ignore: extra layer names whose output channels are kept (the classifier always is).
        global_pruning: rank channels across layers instead of within each layer.
        steps: reach ``ratio`` in this many steps; ``between(step)`` runs after each (fine-tuning).
        target_params, target_latency_ms: instead of a ratio, prune step by step (up to ``max_ratio`` in
            ``steps`` steps, 20 when 1 is given) until the model has at most this many parameters / this CPU
            latency at ``latency_batch``.
    """
    tp = require_torch_pruning()
    check_ratio("ratio", ratio)
    check_ratio("max_ratio", max_ratio)
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if target_params is not None and target_params < 1:
        raise ConfigError(f"target_params must be >= 1, got {target_params}")
    if target_latency_ms is not None and target_latency_ms <= 0:
        raise ConfigError(f"target_latency_ms must be > 0, got {target_latency_ms}")
    imp = _importance(importance)
    if importance == "taylor" and not grad_batches:
        raise ConfigError("importance 'taylor' needs gradients: give grad_batches (a few (x, y) training batches)")
    ignored = resolve_layers(model, [output_layer(model), *(ignore or ())])
    budget = target_params is not None or target_latency_ms is not None
    if budget and steps == 1:
        steps = 20
    before_channels, before_params = channel_counts(model), _params(model)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out_shape = model(example_inputs).shape
    pruner = tp.pruner.BasePruner(
        model,
        example_inputs,
        importance=imp,
        pruning_ratio=max_ratio if budget else ratio,
        iterative_steps=steps,
        global_pruning=global_pruning,
        ignored_layers=ignored,
        round_to=round_to,
    )
    met = not budget
    taken = 0
    for k in range(steps):
        if importance == "taylor":
            _accumulate_grads(model, grad_batches)
        pruner.step()
        model.zero_grad(set_to_none=True)
        taken = k + 1
        if between is not None:
            between(k)
            model.eval()
        if budget and _within_budget(model, example_inputs, target_params, target_latency_ms, latency_batch):
            met = True
            break
    model.train(was_training)
    with torch.no_grad():
        new_shape = model.eval()(example_inputs).shape
    model.train(was_training)
    if new_shape != out_shape:  # the classifier was protected; this would be a torch-pruning bug
        raise DistillError(f"pruning changed the output shape from {tuple(out_shape)} to {tuple(new_shape)}")
    after = channel_counts(model)
    if budget and not met:
        raise DistillError(
            f"could not reach the budget (params <= {target_params}, latency <= {target_latency_ms} ms) by pruning "
            f"{max_ratio:.0%} of the channels: the model still has {_params(model):,} parameters; raise max_ratio "
            "or relax the budget"
        )
    return {
        "kind": "structured",
        "importance": importance,
        "ratio": (max_ratio * taken / steps) if budget else ratio,
        "global_pruning": global_pruning,
        "steps": taken,
        "params_before": before_params,
        "params_after": _params(model),
        "channels": {n: [before_channels[n], after[n]] for n in after if n in before_channels},
    }


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _accumulate_grads(model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]]) -> None:
    """Cross-entropy gradients over ``batches`` (for Taylor importance), model in eval mode."""
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for x, y in batches:
            F.cross_entropy(model(x), y).backward()


def _within_budget(model: nn.Module, x: Tensor, target_params: int | None, target_ms: float | None, batch: int) -> bool:
    if target_params is not None and _params(model) > target_params:
        return False
    if target_ms is not None:
        device = next(model.parameters()).device
        ms = latency_ms(model, tuple(x.shape[1:]), batch, repeats=10)
        model.to(device)
        if ms > target_ms:
            return False
    return True
