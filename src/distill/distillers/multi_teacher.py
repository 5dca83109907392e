"""Distillation from several teachers into one student (Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in
a Neural Network", arXiv:1503.02531: an ensemble's knowledge transferred to a single model)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.distillers.base import Distiller, StepInput, Teacher, check_range, register_method
from distill.errors import ConfigError
from distill.losses.logits import multi_teacher_kd_loss

MODES = ("sum", "average")


class MultiTeacher(Teacher):
    """Several frozen teachers behind one :class:`Teacher` interface.

    ``forward`` returns the weighted ensemble's logits ``(B, K)`` — the log of the weighted mean of the teachers'
    probabilities — so evaluation, agreement metrics and logit caches treat it as one teacher;
    :meth:`all_logits` returns every teacher's logits stacked, ``(N, B, K)``.
    """

    def __init__(self, teachers: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        if not teachers:
            raise ConfigError("MultiTeacher needs at least one teacher")
        members = [t if isinstance(t, Teacher) else Teacher(t) for t in teachers]
        super().__init__(nn.ModuleList(members))
        self.weights = normalized_weights(weights, len(members))

    @property
    def members(self) -> list[Teacher]:
        return list(self.model)

    def __len__(self) -> int:
        return len(self.model)

    def all_logits(self, x: Tensor) -> Tensor:
        """``(N, B, K)``: each teacher's logits for ``x``."""
        with torch.no_grad():
            return torch.stack([t(x) for t in self.model])

    def forward(self, x: Tensor) -> Tensor:
        t = self.all_logits(x).float()
        log_w = torch.tensor(self.weights, device=t.device).log()[:, None, None]
        return torch.logsumexp(F.log_softmax(t, dim=2) + log_w, dim=0)  # (B, K)


def normalized_weights(weights: Sequence[float] | None, n: int, normalize: bool = True) -> tuple[float, ...]:
    """Per-teacher weights (uniform by default), checked and, when ``normalize``, scaled to sum to 1."""
    w = [1.0] * n if weights is None else [float(v) for v in weights]
    if len(w) != n:
        raise ConfigError(f"{n} teacher(s) but {len(w)} weights {w}; give one weight per teacher")
    for i, v in enumerate(w):
        check_range(f"weights[{i}]", v, lo=0.0)
    if sum(w) <= 0:
        raise ConfigError(f"weights must not all be zero, got {w}")
    return tuple(v / sum(w) for v in w) if normalize else tuple(w)


@register_method("multi_kd")
class MultiTeacherKD(Distiller):
    """``ce_weight · CE + kd_weight · Σ_i w_i · T_i² · KL(softmax(t_i/T_i) ‖ softmax(s/T_i))``.

    ``teacher`` may be a :class:`MultiTeacher`, a list of models, or one model (then this is plain KD).
    ``mode="average"`` distils instead from the weighted average of the teachers' soft targets (Hinton's
    ensemble target) at one temperature. The defaults mirror ``kd`` (α = 0.9 → CE 0.1, KD 0.9, T = 4).

    Args:
        weights: per-teacher weights (uniform when omitted); scaled to sum to 1 unless ``normalize=False``.
        temperatures: per-teacher temperatures (``temperature`` for all when omitted).
        temperature: the temperature used when ``temperatures`` is not given.
        mode: ``"sum"`` (a weighted sum of per-teacher KD terms) or ``"average"`` (KD to the averaged targets).
        normalize: scale the weights to sum to 1.
        ce_weight / kd_weight: weights of the label and teacher terms.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | Sequence[nn.Module] | None = None,
        *,
        weights: list[float] | None = None,
        temperatures: list[float] | None = None,
        temperature: float = 4.0,
        mode: str = "sum",
        normalize: bool = True,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        **kw,
    ) -> None:
        if teacher is None:
            raise ConfigError("method 'multi_kd' needs at least one teacher")
        members = teacher.members if isinstance(teacher, MultiTeacher) else teacher
        members = list(members) if isinstance(members, (list, tuple)) else [members]
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {list(MODES)}, got {mode!r}")
        temps = [float(v) for v in temperatures] if temperatures is not None else [temperature] * len(members)
        if len(temps) != len(members):
            raise ConfigError(f"{len(members)} teacher(s) but {len(temps)} temperatures {temps}")
        for i, v in enumerate(temps):
            check_range(f"temperatures[{i}]", v, lo=0.0, lo_open=True)
        if mode == "average" and len(set(temps)) != 1:
            raise ConfigError(f"mode='average' needs one temperature for all teachers, got {temps}")
        self.weights = normalized_weights(weights, len(members), normalize)
        multi = MultiTeacher(members, normalized_weights(weights, len(members)))
        super().__init__(student, multi, temperature=temperature, ce_weight=ce_weight, kd_weight=kd_weight, **kw)
        self.temperatures, self.mode = tuple(temps), mode
        # A (B, K) logit cache cannot be split back into several teachers: ask the pipeline for live teachers.
        self.teacher_features = len(members) > 1

    def teacher_logits(self, b: StepInput) -> Tensor:
        """``(N, B, K)``: from the cache when it holds every teacher's logits, else from the teachers."""
        cached = b.teacher_logits
        n = len(self.teacher)
        if cached is not None and cached.dim() == 3 and cached.shape[0] == n:
            return cached
        if cached is not None and cached.dim() == 2 and n == 1:
            return cached[None]
        return self.teacher.all_logits(b.x)

    def step(self, b: StepInput) -> dict[str, Tensor]:
        t = self.teacher_logits(b)
        logits = self.student(b.x)
        terms = self.logit_terms(logits, b.y, None)  # CE only; the teacher term is the multi-teacher one
        if self.kd_weight > 0:
            terms["kd"] = self.kd_weight * multi_teacher_kd_loss(logits, t, self.weights, self.temperatures, self.mode)
        return {**terms, "_logits": logits}
