"""Text distillation methods, registered in their own registry :data:`TEXT_DISTILLERS`.

They are :class:`~distill.distillers.base.Distiller` subclasses, so the same :class:`~distill.engine.trainer.Trainer`
trains them; they live apart from ``DISTILLERS`` because they need transformer internals (hidden states,
attention maps, sentence embeddings) that the image models of that registry's tests do not have.

Every method adds the common logit terms: ``ce_weight`` · cross-entropy on the labelled samples (label ``-1``
marks unlabeled text and is skipped) and ``kd_weight`` · Hinton's KD at ``temperature``. The teacher's logits
can be precomputed once for the training split (:meth:`TextDistiller.set_teacher_logits`), which makes plain KD
cost no teacher forward per step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.distillers.base import Distiller, StepInput, alpha_weights, check_range
from distill.errors import ConfigError
from distill.registry import Registry
from distill.text.losses import (
    attention_kl_loss,
    attention_mse_loss,
    embedding_loss,
    hidden_mse_loss,
    masked_cross_entropy,
)
from distill.text.models import HFClassifier, mean_pool, uniform_layers, unpack

TEXT_DISTILLERS: Registry[type[TextDistiller]] = Registry("text method")


def register_text_method(name: str) -> Callable[[type[TextDistiller]], type[TextDistiller]]:
    def deco(cls: type[TextDistiller]) -> type[TextDistiller]:
        cls.name = name
        return TEXT_DISTILLERS.register(name)(cls)

    return deco


class TextDistiller(Distiller):
    """Base of the text methods: masked CE, optional cached teacher logits, one teacher pass for all targets."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, **kw: Any) -> None:
        super().__init__(student, teacher, **kw)
        self.register_buffer("cached_logits", None, persistent=False)

    def set_teacher_logits(self, logits: Tensor | None) -> None:
        """Teacher logits ``(N, K)`` of the training split, looked up by each batch's ``index``."""
        self.cached_logits = logits

    def label_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy averaged over the labelled texts only (the KD term is the image methods' own,
        :meth:`Distiller.logit_terms`): a batch of mostly unlabeled text still weighs its few labels fully."""
        return masked_cross_entropy(logits, y, self.label_smoothing)

    def cached(self, b: StepInput) -> Tensor | None:
        if b.teacher_logits is not None:
            return b.teacher_logits
        if self.cached_logits is not None and b.index is not None and self.training:
            return self.cached_logits[b.index.to(self.cached_logits.device)]
        return None

    def teacher_outputs(self, x: Any, hidden: bool = False, attentions: bool = False) -> Any:
        """The teacher's full output under ``no_grad`` (logits, and hidden states / attentions when asked)."""
        assert self.teacher is not None
        with torch.no_grad():
            return _as_hf(self.teacher.model, "teacher").run(x, hidden=hidden, attentions=attentions)


def _as_hf(model: nn.Module, role: str) -> HFClassifier:
    if not isinstance(model, HFClassifier):
        raise ConfigError(f"this method needs a transformer {role} (HFClassifier), got {type(model).__name__}")
    return model


@register_text_method("text_ce")
class TextCE(TextDistiller):
    """No distillation: cross-entropy on the labels (the baseline every student is compared to)."""

    needs_teacher = False
    hidden_params = ("kd_weight", "temperature")

    def step(self, b: StepInput) -> dict[str, Tensor]:
        logits = self.student(b.x)
        return {**self.logit_terms(logits, b.y, None), "_logits": logits}


@register_text_method("text_kd")
class TextKD(TextDistiller):
    """Hinton et al. (2015) for any text student: ``(1 − α) · CE + α · T² · KL``; ``α = 1`` needs no labels."""

    hidden_params = ("ce_weight", "kd_weight")

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        alpha: float = 0.9,
        temperature: float = 2.0,
        **kw,
    ) -> None:
        super().__init__(student, teacher, temperature=temperature, **alpha_weights(alpha), **kw)

    def step(self, b: StepInput) -> dict[str, Tensor]:
        t = self.cached(b)
        if t is None:
            t = self.teacher(b.x)
        logits = self.student(b.x)
        return {**self.logit_terms(logits, b.y, t), "_logits": logits}


class _LayerMatch(TextDistiller):
    """Shared by the layer-wise methods: which teacher layer each chosen student layer imitates."""

    def _layer_map(self, layer_map: Sequence[int] | None, default_last_only: bool) -> list[tuple[int, int]]:
        s_layers = len(_as_hf(self.student, "student").layers())
        t_layers = len(_as_hf(self.teacher.model, "teacher").layers())
        if layer_map is None:
            layer_map = uniform_layers(t_layers, s_layers)
            if default_last_only:
                layer_map = [None] * (s_layers - 1) + [t_layers - 1]
        if len(layer_map) != s_layers:
            raise ConfigError(f"layer_map needs one teacher layer (or null) per student layer ({s_layers})")
        pairs = [(s, t) for s, t in enumerate(layer_map) if t is not None]
        if any(not 0 <= t < t_layers for _, t in pairs):
            raise ConfigError(f"layer_map entries must be in [0, {t_layers}), got {list(layer_map)}")
        return pairs


@register_text_method("hidden")
class HiddenStates(_LayerMatch):
    """TinyBERT's hidden-state (and embedding-layer) loss through learned projections, plus the logit terms.

    Args:
        layer_map: for each student layer, the teacher layer it imitates (``null`` for none); default: evenly
            spaced, ending at the last layer (6 → 3: [1, 3, 5]).
        hidden_weight: weight of the summed per-layer MSE.
        embeddings: also match the embedding-layer outputs (TinyBERT's L_embd).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        layer_map: list[int | None] | None = None,
        hidden_weight: float = 1.0,
        embeddings: bool = True,
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
        temperature: float = 2.0,
        **kw,
    ) -> None:
        check_range("hidden_weight", hidden_weight, lo=0.0)
        super().__init__(student, teacher, ce_weight=ce_weight, kd_weight=kd_weight, temperature=temperature, **kw)
        self.pairs = self._layer_map(layer_map, default_last_only=False)
        if embeddings:
            self.pairs = [(-1, -1), *self.pairs]  # hidden_states[0] is the embedding output
        d_s, d_t = self.student.config.hidden_size, self.teacher.model.config.hidden_size
        self.proj = nn.ModuleList(_projection(d_s, d_t) for _ in self.pairs)
        self.hidden_weight = hidden_weight

    def step(self, b: StepInput) -> dict[str, Tensor]:
        _, mask = unpack(b.x)
        t = self.teacher_outputs(b.x, hidden=True)
        s = self.student.run(b.x, hidden=True)
        terms = self.logit_terms(s.logits, b.y, t.logits)
        return {**terms, "hidden": self.hidden_weight * self.hidden_loss(s, t, mask), "_logits": s.logits}

    def hidden_loss(self, s: Any, t: Any, mask: Tensor) -> Tensor:
        """The summed MSE of the mapped layers' projected hidden states (student and teacher HF outputs)."""
        return sum(
            hidden_mse_loss(p(s.hidden_states[i + 1]), t.hidden_states[j + 1], mask)
            for p, (i, j) in zip(self.proj, self.pairs, strict=True)
        )


@register_text_method("tinybert")
class TinyBERT(HiddenStates):
    """TinyBERT's intermediate-layer distillation (Jiao et al., 2020, arXiv:1909.10351, §3.1): every mapped student
    layer imitates its teacher layer's hidden states (through a learned projection) and attention matrices, the
    embedding outputs too; ``L = hidden_weight · Σ L_hidn + attention_weight · Σ L_attn`` plus the logit terms.

    TinyBERT trains in two stages on the augmented data: this one (the default weights: no logit terms), then
    prediction-layer distillation — ``text_kd`` with ``alpha: 1`` (soft targets only) from the cached teacher logits.

    Args:
        layer_map: teacher layer per student layer (``null`` for none); default: evenly spaced ending at the last
            (TinyBERT's uniform mapping ``g(m) = m · N / M``). Mapped layers need equal head counts.
        hidden_weight, attention_weight: weights of the summed per-layer losses.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        layer_map: list[int | None] | None = None,
        hidden_weight: float = 1.0,
        attention_weight: float = 1.0,
        embeddings: bool = True,
        ce_weight: float = 0.0,
        kd_weight: float = 0.0,
        temperature: float = 1.0,
        **kw,
    ) -> None:
        check_range("attention_weight", attention_weight, lo=0.0)
        super().__init__(
            student, teacher, layer_map=layer_map, hidden_weight=hidden_weight, embeddings=embeddings,
            ce_weight=ce_weight, kd_weight=kd_weight, temperature=temperature, **kw,
        )  # fmt: skip
        h_s, h_t = self.student.config.num_attention_heads, self.teacher.model.config.num_attention_heads
        if h_s != h_t:
            raise ConfigError(f"attention matrices need equal head counts (student {h_s}, teacher {h_t})")
        self.attention_pairs = [(i, j) for i, j in self.pairs if i >= 0]
        self.student.use_eager_attention()
        self.teacher.model.use_eager_attention()
        self.attention_weight = attention_weight

    def step(self, b: StepInput) -> dict[str, Tensor]:
        _, mask = unpack(b.x)
        t = self.teacher_outputs(b.x, hidden=True, attentions=True)
        s = self.student.run(b.x, hidden=True, attentions=True)
        hidden = self.hidden_loss(s, t, mask)
        attention = sum(attention_mse_loss(s.attentions[i], t.attentions[j], mask) for i, j in self.attention_pairs)
        terms = self.logit_terms(s.logits, b.y, t.logits)
        return {
            **terms,
            "hidden": self.hidden_weight * hidden,
            "attention": self.attention_weight * attention,
            "_logits": s.logits,
        }


def _projection(d_s: int, d_t: int) -> nn.Linear:
    p = nn.Linear(d_s, d_t)
    if d_s == d_t:  # start from "no change" when the widths agree
        with torch.no_grad():
            p.weight.copy_(torch.eye(d_s))
            p.bias.zero_()
    return p


@register_text_method("attention")
class AttentionMaps(_LayerMatch):
    """MiniLM's attention-distribution transfer (KL per head and query) at mapped layers, plus the logit terms.

    Args:
        layer_map: teacher layer per student layer (``null`` for none); default: the last student layer imitates
            the last teacher layer, as in MiniLM. Mapped layers must have the same number of heads.
        attention_weight: weight of the summed per-layer KL.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        layer_map: list[int | None] | None = None,
        attention_weight: float = 1.0,
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
        temperature: float = 2.0,
        **kw,
    ) -> None:
        check_range("attention_weight", attention_weight, lo=0.0)
        super().__init__(student, teacher, ce_weight=ce_weight, kd_weight=kd_weight, temperature=temperature, **kw)
        self.pairs = self._layer_map(layer_map, default_last_only=True)
        h_s, h_t = self.student.config.num_attention_heads, self.teacher.model.config.num_attention_heads
        if h_s != h_t:
            raise ConfigError(f"attention maps need equal head counts (student {h_s}, teacher {h_t})")
        self.student.use_eager_attention()
        self.teacher.model.use_eager_attention()
        self.attention_weight = attention_weight

    def step(self, b: StepInput) -> dict[str, Tensor]:
        _, mask = unpack(b.x)
        t = self.teacher_outputs(b.x, attentions=True)
        s = self.student.run(b.x, attentions=True)
        loss = sum(attention_kl_loss(s.attentions[i], t.attentions[j], mask) for i, j in self.pairs)
        terms = self.logit_terms(s.logits, b.y, t.logits)
        return {**terms, "attention": self.attention_weight * loss, "_logits": s.logits}


@register_text_method("embedding")
class SentenceEmbedding(TextDistiller):
    """Sentence-embedding distillation (Reimers & Gurevych, 2020): the student's pooled features, projected to the
    teacher's width, regress the teacher's mean-pooled, L2-normalised embedding. Needs no labels, so it can use
    unlabeled text (``ce_weight=0``); any student with ``embed(x)`` works (transformer, CNN, BiLSTM).

    Args:
        kind: ``"mse"`` or ``"cosine"``.
        embed_weight: weight of the embedding loss.
    """

    needs_labels = False

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        kind: str = "mse",
        embed_weight: float = 1.0,
        ce_weight: float = 0.0,
        kd_weight: float = 0.0,
        temperature: float = 2.0,
        **kw,
    ) -> None:
        if kind not in ("mse", "cosine"):
            raise ConfigError(f"kind must be 'mse' or 'cosine', got {kind!r}")
        check_range("embed_weight", embed_weight, lo=0.0)
        super().__init__(student, teacher, ce_weight=ce_weight, kd_weight=kd_weight, temperature=temperature, **kw)
        if not hasattr(student, "embed"):
            raise ConfigError(f"the embedding method needs a student with embed(x); {type(student).__name__} has none")
        t = _as_hf(self.teacher.model, "teacher")
        d_t = t.config.hidden_size
        d_s = student.config.hidden_size if isinstance(student, HFClassifier) else student.hidden_size
        self.proj = nn.Identity() if d_s == d_t else nn.Linear(d_s, d_t)
        self.kind, self.embed_weight = kind, embed_weight

    def step(self, b: StepInput) -> dict[str, Tensor]:
        _, mask = unpack(b.x)
        t = self.teacher_outputs(b.x, hidden=True)
        t_emb = F.normalize(mean_pool(t.hidden_states[-1], mask), dim=-1)
        if isinstance(self.student, HFClassifier):
            s = self.student.run(b.x, hidden=True)
            logits, s_emb = s.logits, mean_pool(s.hidden_states[-1], mask)
        else:
            s_emb = self.student.embed(b.x)
            logits = self.student.head(self.student.dropout(s_emb))
        terms = self.logit_terms(logits, b.y, t.logits)
        emb = embedding_loss(self.proj(s_emb), t_emb, self.kind)
        return {**terms, "embedding": self.embed_weight * emb, "_logits": logits}


def text_method_params(name: str) -> dict[str, inspect.Parameter]:
    """The hyper-parameters text method ``name`` takes (keyword arguments minus hidden and context ones)."""
    cls = TEXT_DISTILLERS.get(name)
    params: dict[str, inspect.Parameter] = {}
    for klass in reversed(cls.__mro__):
        if isinstance(klass, type) and issubclass(klass, Distiller):
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.kind is p.KEYWORD_ONLY:
                    params[p.name] = p
    for hidden in ("input_shape", *cls.hidden_params):
        params.pop(hidden, None)
    return params


def build_text_distiller(name: str, student: nn.Module, teacher: nn.Module | None, **params: Any) -> TextDistiller:
    """Create text method ``name``; unknown hyper-parameters are refused with the list of valid ones."""
    cls = TEXT_DISTILLERS.get(name)
    valid = text_method_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(f"text method {name!r} has no parameter(s) {unknown}; it takes {sorted(valid)}")
    return cls(student, teacher if cls.needs_teacher else None, **params)
