"""Typed configuration: the YAML/override machinery every config shares (`base`), a fine-tuning run's
config (`finetune`), a pretraining run's (`pretrain`) and the range checks all of them pass before any
work (`checks`). A method's options come from the method itself (`methods/`)."""
