"""Runs as objects: `finetune.FinetuneRun` (setup -> fit -> save). Pretraining, compare, tune and
plan move here as they adopt the same skeleton."""
