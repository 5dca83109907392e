"""Factor Transfer (Kim, Park & Kwak, NeurIPS 2018, "Paraphrasing Complex Network: Network Compression via Factor
Transfer", arXiv:1802.04977)."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.distillers.base import StepInput, check_range, register_method
from distill.distillers.feature_base import FeatureDistiller, Shape, last_stage
from distill.errors import ConfigError
from distill.losses.variational import factor_transfer_loss

BENCHMARK_PRETRAIN, BENCHMARK_EPOCHS = 30, 240  # the CRD benchmark's paraphraser epochs next to its student's


def _conv_stack(channels: list[int], transpose: bool = False) -> nn.Sequential:
    """3×3, stride-1 (transposed) convolutions with LeakyReLU(0.1), keeping the spatial size."""
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    layers: list[nn.Module] = []
    for cin, cout in itertools.pairwise(channels):
        layers += [conv(cin, cout, 3, padding=1), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """An autoencoder on the teacher's feature map: encoder C → C → kC → kC, decoder kC → kC → C → C."""

    def __init__(self, channels: int, code_channels: int) -> None:
        super().__init__()
        self.encoder = _conv_stack([channels, channels, code_channels, code_channels])
        self.decoder = _conv_stack([code_channels, code_channels, channels, channels], transpose=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        code = self.encoder(x)
        return code, self.decoder(code)


@register_method("ft")
class FT(FeatureDistiller):
    """``ce_weight · CE + ft_weight · ‖F_t/‖F_t‖ − F_s/‖F_s‖‖_p [+ kd_weight · KD]``.

    The teacher's factor ``F_t`` is the code of a *paraphraser* (a convolutional autoencoder with
    ``rate · C`` code channels on the teacher's last feature map), the student's ``F_s`` the output of a
    *translator* (three convolutions on the student's last feature map, resized to the teacher's when the spatial
    sizes differ).

    Paraphraser pre-training happens inside the method, driven by the trainer's :meth:`set_epoch`: during the
    first ``paraphraser_epochs`` epochs the paraphraser learns to reconstruct the teacher's features (MSE, reported
    as ``"recon"``) while the student gets only the logit terms (CE [+ KD]) and the translator is idle; afterwards
    the paraphraser is frozen (run under ``no_grad``) and the factor loss (``"ft"``) trains student and
    translator. The paraphraser is a submodule, so its weights are saved with checkpoints; the stage follows from
    the epoch, which the trainer restores on resume. Outside the trainer (no ``set_epoch``) the method is in epoch
    0, i.e. stage 1 unless ``paraphraser_epochs = 0``. The paper pre-trains the paraphraser in a separate run (the
    CRD benchmark: 30 epochs next to its 240-epoch student runs); by default the stage keeps that proportion of
    the run the trainer announces: ``⌊epochs / 8⌋`` epochs, at least 1 (30 of 240, 1 of 10). An explicit
    ``paraphraser_epochs`` is used as given.

    Args:
        student_layer / teacher_layer: the feature maps (default: the last ``feature_layers`` stage of each model).
        ft_weight: β (200, as in the CRD benchmark, for the default ``reduction="mean"``).
        rate: k, the paraphraser's code channels as a fraction of the teacher's (0.5).
        p: the norm of the factor distance (1, the paper's choice).
        paraphraser_epochs: epochs of paraphraser pre-training at the start of the run; ``None`` (default): an
            eighth of the run, at least 1; 0 skips it.
        reduction: ``"mean"`` (mean over elements, the benchmark's form) or ``"norm"`` (the paper's per-sample norm).
    """

    single_layer = True
    default_layer = staticmethod(last_stage)

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        ft_weight: float = 200.0,
        rate: float = 0.5,
        p: int = 1,
        paraphraser_epochs: int | None = None,
        reduction: str = "mean",
        input_shape=None,
        **kw,
    ) -> None:
        check_range("ft_weight", ft_weight, lo=0.0)
        check_range("rate", rate, lo=0.0, lo_open=True)
        if paraphraser_epochs is not None:
            check_range("paraphraser_epochs", paraphraser_epochs, lo=0)
        if p not in (1, 2):
            raise ConfigError(f"p must be 1 or 2, got {p}")
        if reduction not in ("mean", "norm"):
            raise ConfigError(f"reduction must be 'mean' or 'norm', got {reduction!r}")
        if input_shape is None:
            raise ConfigError("ft needs input_shape to size its paraphraser and translator")
        super().__init__(student, teacher, (student_layer, teacher_layer), probe=True, input_shape=input_shape, **kw)
        self.ft_weight, self.p, self.reduction = ft_weight, p, reduction
        self.paraphraser_epochs = paraphraser_epochs
        (s_shape,), (t_shape,) = self.student_shapes, self.teacher_shapes
        code = max(1, round(t_shape[0] * rate))
        self.paraphraser = Paraphraser(t_shape[0], code)
        self.translator = _conv_stack([s_shape[0], s_shape[0], code, code])

    def check_shapes(self, student_shapes: dict[str, Shape], teacher_shapes: dict[str, Shape]) -> None:
        (s_shape,), (t_shape,) = student_shapes.values(), teacher_shapes.values()
        if len(s_shape) != 3 or len(t_shape) != 3:
            raise ConfigError(f"ft needs (C, H, W) feature maps, got student {s_shape} and teacher {t_shape}")

    def pretraining_epochs(self) -> int:
        """Length of stage 1: ``paraphraser_epochs`` when given, else ``max(1, ⌊epochs / 8⌋)`` of the run."""
        if self.paraphraser_epochs is not None:
            return int(self.paraphraser_epochs)
        return max(1, getattr(self, "epochs", 1) * BENCHMARK_PRETRAIN // BENCHMARK_EPOCHS)

    @property
    def pretraining(self) -> bool:
        """True while the paraphraser is being pre-trained (the first :meth:`pretraining_epochs` epochs)."""
        return getattr(self, "epoch", 0) < self.pretraining_epochs()

    def feature_loss(self, s_feats: list[Tensor], t_feats: list[Tensor], b: StepInput) -> dict[str, Tensor]:
        (s_feat,), (t_feat,) = s_feats, t_feats
        if self.pretraining:
            _, recon = self.paraphraser(t_feat)
            return {"recon": F.mse_loss(recon, t_feat)}
        with torch.no_grad():
            t_code, _ = self.paraphraser(t_feat)
        if s_feat.shape[2:] != t_feat.shape[2:]:
            s_feat = F.interpolate(s_feat, size=t_feat.shape[2:], mode="bilinear", align_corners=False)
        s_code = self.translator(s_feat)
        return {"ft": self.ft_weight * factor_transfer_loss(s_code, t_code, self.p, self.reduction)}
