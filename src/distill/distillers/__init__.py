"""Distillation methods: one module, one registered class each."""

from distill.distillers import fitnet, hard, kd, scratch  # noqa: F401  (registration)
from distill.distillers.base import DISTILLERS, Distiller, StepOutput, Teacher, build_distiller, register_method

__all__ = ["DISTILLERS", "Distiller", "StepOutput", "Teacher", "build_distiller", "register_method"]
