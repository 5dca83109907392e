"""Start a student from its teacher's weights, and the train → validation fine-tune → test flow.

Three ways to initialise (``init_from_teacher(student, teacher, mode)``):

* ``match`` — copy every tensor whose name and shape are the same in both models.
* ``every_kth`` — a shallower student of the same family: where a block container (``nn.Sequential`` /
  ``nn.ModuleList``) of the student has fewer blocks than the teacher's, student block ``j`` takes teacher block
  ``j·k`` with ``k = n_teacher // n_student`` (DistilBERT took every other layer). Only children that hold weights
  count as blocks, so a leading max-pool does not shift the count. ResNet-56 → ResNet-20 takes blocks 0, 3, 6 of
  each stage; ``cnn`` with ``blocks=2`` → ``blocks=1`` takes the first conv of each stage. Then tensors are copied
  as in ``match``.
* ``important_channels`` — a narrower student: every channel dimension the two disagree on is filled with the
  teacher's most important channels (largest L1 norm of the output filters that produce them). The teacher is
  traced with ``torch.fx``; channels joined by a residual addition form one group (their filters' norms are summed
  and one selection serves all), and the selection is applied consistently to every consumer: BatchNorm
  statistics, the next conv's input channels and the classifier's input features. Block mapping as in
  ``every_kth`` is applied too, so a student both shallower and narrower works. A dimension whose channels cannot
  be followed through the graph (concatenation, reshapes other than a global-pool flatten) is left at its random
  initialisation and named in the report.

The report lists exactly which student tensor came from which teacher tensor, and why the others did not.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from distill.errors import ConfigError

MODES = ("none", "match", "every_kth", "important_channels")


@dataclass
class TransferReport:
    """What :func:`init_from_teacher` did: ``copied`` maps student tensor -> teacher tensor (whole or sliced)."""

    mode: str
    copied: dict[str, str] = field(default_factory=dict)
    sliced: list[str] = field(default_factory=list)  # student tensors that took a channel subset
    skipped: dict[str, str] = field(default_factory=dict)  # student tensor -> reason

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "copied": len(self.copied),
            "sliced": len(self.sliced),
            "skipped": len(self.skipped),
            "skipped_names": sorted(self.skipped)[:20],
        }


def resolve_mode(value: bool | str | None) -> str:
    """``True`` -> ``"match"``, ``False``/``None`` -> ``"none"``; strings are checked against :data:`MODES`."""
    if value is None or value is False:
        return "none"
    if value is True:
        return "match"
    if value not in MODES:
        raise ConfigError(f"init_from_teacher must be true/false or one of {list(MODES)}, got {value!r}")
    return value


@torch.no_grad()
def init_from_teacher(
    student: nn.Module,
    teacher: nn.Module,
    mode: bool | str = "match",
    input_shape: Sequence[int] | None = None,
) -> TransferReport:
    """Copy the teacher's weights into ``student`` in place (see the module docstring for ``mode``).

    ``input_shape`` ``(C, H, W)`` is needed by ``important_channels`` (a dry run sizes the channel groups).
    """
    mode = resolve_mode(mode)
    report = TransferReport(mode)
    if mode == "none":
        return report
    names = align_modules(student, teacher, by_blocks=mode != "match")
    s_state, t_state = student.state_dict(), teacher.state_dict()
    slices: dict[str, list[Tensor | None]] = {}
    if mode == "important_channels":
        if input_shape is None:
            raise ConfigError("important_channels needs input_shape=(C, H, W) to trace the teacher")
        slices = channel_slices(student, teacher, names, tuple(input_shape), report)
    for key, value in s_state.items():
        t_key = map_key(key, names)
        if t_key is None or t_key not in t_state:
            report.skipped.setdefault(key, "no counterpart in the teacher")
            continue
        src = t_state[t_key]
        if src.shape == value.shape:
            value.copy_(src)
            report.copied[key] = t_key
        elif key in slices:
            for dim, idx in enumerate(slices[key]):
                if idx is not None:
                    src = src.index_select(dim, idx.to(src.device))
            value.copy_(src)
            report.copied[key] = t_key
            report.sliced.append(key)
        else:
            report.skipped.setdefault(key, f"shape {tuple(value.shape)} vs teacher {tuple(src.shape)}")
    return report


# --- block mapping -------------------------------------------------------------------------------------------------


def _has_state(m: nn.Module) -> bool:
    return any(True for _ in m.parameters()) or any(True for _ in m.buffers())


def align_modules(student: nn.Module, teacher: nn.Module, by_blocks: bool = True) -> dict[str, str]:
    """Student module path -> teacher module path. Same names, except that in a block container with fewer
    weight-holding children than the teacher's, the j-th such child maps to the teacher's (j·k)-th."""
    out: dict[str, str] = {}

    def walk(s: nn.Module, t: nn.Module, sp: str, tp: str) -> None:
        out[sp] = tp
        s_kids, t_kids = dict(s.named_children()), dict(t.named_children())
        pairs: dict[str, str] = {n: n for n in s_kids if n in t_kids}
        containers = (nn.Sequential, nn.ModuleList)
        if by_blocks and isinstance(s, containers) and isinstance(t, containers):
            ps = [n for n, c in s_kids.items() if _has_state(c)]
            pt = [n for n, c in t_kids.items() if _has_state(c)]
            if ps and len(pt) > len(ps):
                k = len(pt) // len(ps)
                pairs.update({n: pt[j * k] for j, n in enumerate(ps)})
        for sn, tn in pairs.items():
            walk(s_kids[sn], t_kids[tn], f"{sp}.{sn}" if sp else sn, f"{tp}.{tn}" if tp else tn)

    walk(student, teacher, "", "")
    return out


def map_key(key: str, names: dict[str, str]) -> str | None:
    """The teacher's name for student state-dict entry ``key`` (``None`` when its module has no counterpart)."""
    module, _, attr = key.rpartition(".")
    if module not in names:
        return None
    t = names[module]
    return f"{t}.{attr}" if t else attr


# --- channel selection ---------------------------------------------------------------------------------------------


class _Groups:
    """Union-find over channel spaces, each with a size, producers' filters and a 'cannot prune' flag."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.fixed: list[bool] = []
        self.producers: list[list[Tensor]] = []

    def new(self, size: int, fixed: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.fixed.append(fixed)
        self.producers.append([])
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.fixed[a] = self.fixed[a] or self.fixed[b] or self.size[a] != self.size[b]
            self.producers[a] += self.producers[b]
        return a

    def fix(self, a: int | None) -> None:
        if a is not None:
            self.fixed[self.find(a)] = True


_SAME_CHANNELS = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_SAME_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.sigmoid, torch.tanh, torch.nn.functional.dropout}


def trace_channels(teacher: nn.Module, input_shape: tuple[int, ...]) -> tuple[_Groups, dict[str, list[int | None]]]:
    """Channel groups of ``teacher`` and, per state-dict entry, the group of each of its dimensions."""
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp

    was = teacher.training
    teacher.eval()
    try:
        gm = symbolic_trace(teacher)
        ShapeProp(gm).propagate(torch.zeros(2, *input_shape, device=next(teacher.parameters()).device))
    except Exception as e:  # fx cannot trace data-dependent control flow
        raise ConfigError(f"important_channels cannot trace {type(teacher).__name__} with torch.fx: {e}") from e
    finally:
        teacher.train(was)
    g = _Groups()
    space: dict[Any, int | None] = {}
    dims: dict[str, list[int | None]] = {}
    modules = dict(gm.named_modules())

    def channels(node: Any) -> int | None:
        meta = node.meta.get("tensor_meta") if hasattr(node, "meta") else None
        shape = getattr(meta, "shape", None)
        return int(shape[1]) if shape is not None and len(shape) >= 2 else None

    for node in gm.graph.nodes:
        args = [a for a in node.args if isinstance(a, torch.fx.Node)]
        src = space.get(args[0]) if args else None
        out: int | None = None
        if node.op == "placeholder":
            out = g.new(channels(node) or 0, fixed=True)
        elif node.op == "call_module":
            m, name = modules[node.target], node.target
            if (isinstance(m, nn.Conv2d) and m.groups == 1) or isinstance(m, nn.Linear):
                if isinstance(m, nn.Linear) and (src is None or g.size[g.find(src)] != m.in_features):
                    g.fix(src)
                    src = None  # features that are not one per channel (a flatten of a spatial map)
                out = g.new(m.weight.shape[0])
                g.producers[out].append(m.weight.detach().abs().flatten(1).sum(1))
                dims[f"{name}.weight"] = [out, src] + [None] * (m.weight.dim() - 2)
                if m.bias is not None:
                    dims[f"{name}.bias"] = [out]
            elif isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels and src is not None:
                out = src  # depthwise: one filter per channel
                dims[f"{name}.weight"] = [src, None, None, None]
                if m.bias is not None:
                    dims[f"{name}.bias"] = [src]
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.InstanceNorm2d)) and src is not None:
                out = src
                if isinstance(m, nn.GroupNorm):
                    g.fix(src)
                for pname, _ in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]:
                    if pname != "num_batches_tracked":
                        dims[f"{name}.{pname}"] = [src]
            elif isinstance(m, _SAME_CHANNELS):
                out = src
            elif isinstance(m, nn.Flatten):
                out = src if src is not None and channels(node) == g.size[g.find(src)] else None
            else:
                g.fix(src)
        elif node.op == "call_function" and node.target in (operator.add, torch.add, operator.iadd):
            spaces = [space.get(a) for a in args]
            if len(spaces) == 2 and None not in spaces:
                out = g.union(spaces[0], spaces[1])  # type: ignore[arg-type]
            elif len(args) == 1 and not isinstance(node.args[1], torch.fx.Node):
                out = src  # x + scalar
            else:
                for s in spaces:
                    g.fix(s)
        elif node.op == "call_function" and node.target in _SAME_FUNCTIONS:
            out = src
        elif node.op in ("call_function", "call_method") and node.target in (torch.flatten, "flatten"):
            out = src if src is not None and channels(node) == g.size[g.find(src)] else None
            if out is None:
                g.fix(src)
        elif node.op == "output":
            g.fix(src)
        else:  # get_attr, cat, chunk, view ...: channels we cannot follow
            for a in args:
                g.fix(space.get(a))
        space[node] = out
    return g, dims


def channel_slices(
    student: nn.Module,
    teacher: nn.Module,
    names: dict[str, str],
    input_shape: tuple[int, ...],
    report: TransferReport,
) -> dict[str, list[Tensor | None]]:
    """Per student tensor whose shape differs from its teacher counterpart: the teacher indices to take per dim."""
    g, dims = trace_channels(teacher, input_shape)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    keep: dict[int, int] = {}
    conflicts: set[int] = set()
    wanted: dict[str, tuple[str, list[int | None]]] = {}
    for key, value in s_state.items():
        t_key = map_key(key, names)
        if t_key is None or t_key not in t_state or t_state[t_key].shape == value.shape:
            continue
        src = t_state[t_key]
        if src.dim() != value.dim() or t_key not in dims:
            report.skipped[key] = f"shape {tuple(value.shape)} vs teacher {tuple(src.shape)}; channels not traced"
            continue
        groups = [g.find(s) if s is not None else None for s in dims[t_key]]
        for d, (a, b) in enumerate(zip(value.shape, src.shape, strict=True)):
            if a == b:
                continue
            grp = groups[d]
            if grp is None or g.fixed[grp] or a > b:
                report.skipped[key] = f"dim {d}: {a} vs teacher {b} cannot take a channel subset"
                break
            if keep.setdefault(grp, a) != a:
                conflicts.add(grp)
        else:
            wanted[key] = (t_key, groups)
    chosen: dict[int, Tensor] = {}
    for grp, n in keep.items():
        if grp in conflicts:
            continue
        producers = g.producers[grp]
        importance = torch.stack(producers).sum(0) if producers else torch.arange(g.size[grp], 0, -1).float()
        chosen[grp] = importance.topk(n).indices.sort().values  # the n most important, in their original order
    out: dict[str, list[Tensor | None]] = {}
    for key, (t_key, groups) in wanted.items():
        shape_s, shape_t = s_state[key].shape, t_state[t_key].shape
        idx: list[Tensor | None] = []
        for d, grp in enumerate(groups):
            if shape_s[d] == shape_t[d]:
                idx.append(None)
            elif grp in chosen:
                idx.append(chosen[grp])  # type: ignore[index]
            else:
                report.skipped[key] = f"dim {d}: the student's layers disagree on the channel count of this group"
                break
        else:
            out[key] = idx
    return out
