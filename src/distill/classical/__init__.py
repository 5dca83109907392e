"""scikit-learn students: the teacher's features as a transformer, and classical models fitted to soft targets."""

from distill.classical.features import TeacherFeatures
from distill.classical.soft_targets import (
    SoftTargetDecisionTree,
    SoftTargetGradientBoosting,
    SoftTargetLogisticRegression,
    expand_soft_targets,
    soft_cross_entropy,
    soften,
)

__all__ = [
    "SoftTargetDecisionTree",
    "SoftTargetGradientBoosting",
    "SoftTargetLogisticRegression",
    "TeacherFeatures",
    "expand_soft_targets",
    "soft_cross_entropy",
    "soften",
]
