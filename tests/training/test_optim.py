"""Optimizer groups: layer-wise lr decay, LoRA+ ratios, head lr and weight-decay exclusions, by exact lr."""
from __future__ import annotations

import pytest
import torch

from transferkit import methods  # noqa: F401  (registers the methods)
from transferkit.config.finetune import MethodConfig, TrainConfig
from transferkit.modeling.resolve import ResolvedModel, build_classifier
from transferkit.core.registry import METHODS
from transferkit.tasks.classify.task import classification_loss
from transferkit.training.optim import layer_depths, param_groups
from transferkit.training.loop import Trainer

from helpers import LABELS

LR, HEAD_LR, WD = 1e-3, 1e-2, 0.01


def _model(tiny_model_dir, method="full", **options):
    torch.manual_seed(0)
    base = build_classifier(ResolvedModel("tiny", str(tiny_model_dir), "mean"), LABELS, "mean", 0.1)
    return METHODS.get(method)(MethodConfig(name=method, **options)).apply(base)


def _lr_by_name(model, groups):
    by_id = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    return {n: by_id[id(p)] for n, p in model.named_parameters() if p.requires_grad}


def test_layer_decay_full_finetuning_exact_lrs(tiny_model_dir):
    model = _model(tiny_model_dir)
    lrs = _lr_by_name(model, param_groups(model, LR, HEAD_LR, WD, layer_lr_decay=0.5))
    # 2 layers: top layer (1) at lr, layer 0 at lr * 0.5, embeddings at lr * 0.5^2, head at head_lr
    assert lrs["encoder.encoder.layer.1.attention.self.query.weight"] == (LR, WD)
    assert lrs["encoder.encoder.layer.0.attention.self.query.weight"] == (LR * 0.5, WD)
    assert lrs["encoder.encoder.layer.0.output.LayerNorm.weight"] == (LR * 0.5, 0.0)
    assert lrs["encoder.encoder.layer.1.intermediate.dense.bias"] == (LR, 0.0)
    assert lrs["encoder.embeddings.word_embeddings.weight"] == (LR * 0.25, WD)
    assert lrs["encoder.embeddings.LayerNorm.bias"] == (LR * 0.25, 0.0)
    assert lrs["classifier.weight"] == (HEAD_LR, WD) and lrs["classifier.bias"] == (HEAD_LR, 0.0)
    assert {lr for lr, _ in lrs.values()} == {LR, LR * 0.5, LR * 0.25, HEAD_LR}


def test_no_decay_gives_the_old_two_rates(tiny_model_dir):
    model = _model(tiny_model_dir)
    for decay in (None, 1.0):
        groups = param_groups(model, LR, HEAD_LR, WD, layer_lr_decay=decay)
        assert {g["lr"] for g in groups} == {LR, HEAD_LR}
        assert groups[0]["lr"] == LR and groups[-1]["lr"] == HEAD_LR  # body first: the loop logs group 0


def test_layer_decay_through_peft_wrapper(tiny_model_dir):
    model = _model(tiny_model_dir, "lora", lora_r=4)
    depths = layer_depths(model)
    name = "base_model.model.encoder.encoder.layer.1.attention.self.query.lora_A.default.weight"
    assert depths[name] == 0
    assert depths[name.replace("layer.1", "layer.0")] == 1
    assert depths["base_model.model.encoder.embeddings.word_embeddings.weight"] == 2  # frozen, still placed
    lrs = _lr_by_name(model, param_groups(model, LR, HEAD_LR, WD, layer_lr_decay=0.8))
    assert lrs[name] == (LR, WD)
    assert lrs[name.replace("layer.1", "layer.0")] == (pytest.approx(LR * 0.8), WD)
    head = [n for n in lrs if "classifier" in n]
    assert head and all(lrs[n][0] == HEAD_LR for n in head)


def test_lora_plus_b_matrices_at_ratio(tiny_model_dir):
    model = _model(tiny_model_dir, "lora", lora_r=4, lora_plus_ratio=16.0)
    lrs = _lr_by_name(model, param_groups(model, LR, HEAD_LR, WD))
    lora = {n: lr for n, (lr, _) in lrs.items() if "lora_" in n}
    assert len(lora) == 8
    for n, lr in lora.items():
        assert lr == (LR * 16 if ".lora_B." in n else LR), n
    # with layer decay as well, the two factors multiply
    lrs = _lr_by_name(model, param_groups(model, LR, HEAD_LR, WD, layer_lr_decay=0.5))
    b0 = "base_model.model.encoder.encoder.layer.0.attention.self.value.lora_B.default.weight"
    assert lrs[b0][0] == LR * 16 * 0.5


def test_without_lora_plus_b_matrices_at_lr(tiny_model_dir):
    model = _model(tiny_model_dir, "lora", lora_r=4)
    lrs = _lr_by_name(model, param_groups(model, LR, HEAD_LR, WD))
    assert {lr for n, (lr, _) in lrs.items() if "lora_" in n} == {LR}


def test_trainer_optimizer_uses_layer_decay(tiny_model_dir, tmp_path):
    from accelerate import Accelerator

    from transferkit.data.batches import TokenData
    model = _model(tiny_model_dir)
    data = TokenData([[2, 5, 3], [2, 6, 7, 3]], [0, 1])
    cfg = TrainConfig(batch_size=2, epochs=1, lr=LR, head_lr=HEAD_LR, warmup=0.0, progress=False, layer_lr_decay=0.5)
    trainer = Trainer(model, data, cfg, run_dir=tmp_path, accelerator=Accelerator(cpu=True), pad_id=0,
                      loss_fn=classification_loss)
    assert sorted({g["initial_lr"] for g in trainer.opt.param_groups}) == [LR * 0.25, LR * 0.5, LR, HEAD_LR]
