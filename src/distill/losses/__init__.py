"""Loss functions as pure tensor functions: no configs, no layer names, temperatures and T² explicit."""

from distill.losses.attention import at_loss, attention_map, nst_loss
from distill.losses.contrastive import info_nce_loss, memory_update, nce_loss
from distill.losses.features import hint_loss
from distill.losses.logits import (
    dist_loss,
    dkd_loss,
    kd_loss,
    lskd_loss,
    multi_teacher_kd_loss,
    nckd_loss,
    pearson_distance,
    pseudo_label_loss,
    soft_cross_entropy,
    tckd_loss,
    zscore,
)
from distill.losses.relational import cc_loss, pkt_loss, rkd_angle_loss, rkd_distance_loss, sp_loss
from distill.losses.review import hcl_loss
from distill.losses.variational import factor_transfer_loss, vid_nll

__all__ = [
    "at_loss",
    "attention_map",
    "cc_loss",
    "dist_loss",
    "dkd_loss",
    "factor_transfer_loss",
    "hcl_loss",
    "hint_loss",
    "info_nce_loss",
    "kd_loss",
    "lskd_loss",
    "memory_update",
    "multi_teacher_kd_loss",
    "nce_loss",
    "nckd_loss",
    "nst_loss",
    "pearson_distance",
    "pkt_loss",
    "pseudo_label_loss",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "soft_cross_entropy",
    "sp_loss",
    "tckd_loss",
    "vid_nll",
    "zscore",
]
