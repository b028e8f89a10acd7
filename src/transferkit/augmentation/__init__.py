"""Augmentation for small training sets: EDA, paraphrase, back-translation (new training rows made
before training) and mixup (inside the training step). `data.augment` / `--augment SPEC` names them
(`spec.py`); only the training split is ever augmented (`Task.augment`)."""
from .spec import Step, mixup_alpha, parse_spec, text_steps

__all__ = ["Step", "mixup_alpha", "parse_spec", "text_steps"]
