"""Loss functions as pure tensor functions: no configs, no layer names, temperatures and T² explicit."""

from distill.losses.features import hint_loss
from distill.losses.logits import kd_loss, pseudo_label_loss, soft_cross_entropy

__all__ = ["hint_loss", "kd_loss", "pseudo_label_loss", "soft_cross_entropy"]
