"""Text distillation: a pretrained transformer teacher (any local Hugging Face classifier, e.g. the shipped
all-MiniLM-L6-v2 with a new head) distilled into shallower transformers, CNN/BiLSTM students and scikit-learn
students, trained by the same :class:`~distill.engine.trainer.Trainer` as the image models.

Needs the optional ``transformers`` package (``pip install distill[text]``); imports of it are deferred.
"""

from distill.text.data import TextBatch, TextData, TextDataModule, TokenBatch, load_text_files, rotten_tomatoes
from distill.text.distillers import TEXT_DISTILLERS, TextDistiller, build_text_distiller, register_text_method

__all__ = [
    "TEXT_DISTILLERS",
    "TextBatch",
    "TextData",
    "TextDataModule",
    "TextDistiller",
    "TokenBatch",
    "build_text_distiller",
    "load_text_files",
    "register_text_method",
    "rotten_tomatoes",
]
