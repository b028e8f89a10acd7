"""Runs as objects on one skeleton (`run.Run`: setup -> fit -> save): `finetune.FinetuneRun` and
`pretrain.PretrainRun`; compare runs FinetuneRun per method, and tune and plan will too."""
