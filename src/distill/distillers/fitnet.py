"""FitNets: hints for thin deep nets (Romero et al., 2015, arXiv:1412.6550)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distill.distillers.base import StepInput, check_range, register_method
from distill.distillers.feature_base import FeatureDistiller, middle_stage
from distill.errors import ConfigError
from distill.losses import hint_loss


def make_adapter(s_shape: tuple[int, ...], t_shape: tuple[int, ...]) -> nn.Module:
    """A regressor from the student's feature shape to the teacher's: 1×1 conv + BN for maps, linear for vectors."""
    if len(s_shape) == 3 and len(t_shape) == 3:
        return nn.Sequential(nn.Conv2d(s_shape[0], t_shape[0], 1, bias=False), nn.BatchNorm2d(t_shape[0]))
    if len(s_shape) == 1 and len(t_shape) == 1:
        return nn.Linear(s_shape[0], t_shape[0])
    raise ConfigError(f"cannot adapt a student feature of shape {s_shape} to a teacher feature of shape {t_shape}")


@register_method("fitnet")
class FitNet(FeatureDistiller):
    """``ce_weight · CE + hint_weight · MSE(adapter(s_hint), t_hint) [+ kd_weight · KD]``.

    The adapter (the paper's regressor) is sized by a dry run of both networks; when the spatial sizes differ the
    student's map is resized to the teacher's. Set ``kd_weight`` to add Hinton's term.

    Args:
        student_layer / teacher_layer: module names of the hint layers (default: the middle stage).
        hint_weight: weight of the hint loss (100, as in the CRD benchmark's FitNet setting).
        hint_epochs: the paper's two-stage schedule as an option. During the first ``hint_epochs`` epochs (counted
            by the trainer's :meth:`set_epoch`) only the hint loss is returned, so only the student up to the hint
            layer and the adapter learn (the later layers get no gradient; their BN statistics still update in
            the full forward that produces the logits for metrics); afterwards the normal loss. 0 (the default)
            trains with the normal loss throughout, as the CRD benchmark does, so there is no stage to scale with
            the run's length; an explicit value is used as given. Outside the trainer (no ``set_epoch``) the
            method counts as being in epoch 0.
    """

    single_layer = True
    default_layer = staticmethod(middle_stage)  # the paper guides the student's middle layer by the teacher's

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        hint_weight: float = 100.0,
        hint_epochs: int = 0,
        input_shape=None,
        **kw,
    ) -> None:
        check_range("hint_weight", hint_weight, lo=0.0)
        check_range("hint_epochs", hint_epochs, lo=0)
        if input_shape is None:
            raise ConfigError("fitnet needs input_shape to size its adapter")
        super().__init__(student, teacher, (student_layer, teacher_layer), probe=True, input_shape=input_shape, **kw)
        self.hint_weight = hint_weight
        (s_shape,), (t_shape,) = self.student_shapes, self.teacher_shapes
        self.adapter = make_adapter(s_shape, t_shape)
        self.t_size = t_shape[1:]
        self.hint_epochs = hint_epochs

    @property
    def hint_stage(self) -> bool:
        """True during stage 1 of the two-stage schedule (hint loss only)."""
        return getattr(self, "epoch", 0) < self.hint_epochs

    def logit_terms(self, logits: Tensor, y: Tensor | None, t_logits: Tensor | None) -> dict[str, Tensor]:
        return {} if self.hint_stage else super().logit_terms(logits, y, t_logits)  # stage 1: the hint alone

    def feature_loss(self, s_feats: list[Tensor], t_feats: list[Tensor], b: StepInput) -> dict[str, Tensor]:
        (s_feat,), (t_feat,) = s_feats, t_feats
        s_feat = self.adapter(s_feat)
        if s_feat.dim() == 4 and s_feat.shape[2:] != t_feat.shape[2:]:
            s_feat = F.interpolate(s_feat, size=t_feat.shape[2:], mode="bilinear", align_corners=False)
        return {"hint": self.hint_weight * hint_loss(s_feat, t_feat)}
