"""`plan`: memory arithmetic, dry runs, the recommendation's rules of thumb, and bad input."""
from __future__ import annotations

import json

import pytest
import torch

from helpers import make_sentences, write_conll, write_csv
from transferkit import api, cli
from transferkit.config.finetune import TrainConfig
from transferkit.core.errors import UserError
from transferkit.training.memory_estimate import training_memory
from transferkit.recipes.plan import (GB, Hardware, PlanRun, parse_duration, parse_memory, plan_method, project_time,
                                      recommend)

# tiny BERT (tests/helpers.py): vocab 128, hidden 32, 2 layers, 2 heads, intermediate 64, 64 positions
EMBEDDINGS = 128 * 32 + 64 * 32 + 2 * 32 + 2 * 32
LAYER = 3 * (32 * 32 + 32) + (32 * 32 + 32) + 2 * 32 + (32 * 64 + 64) + (64 * 32 + 32) + 2 * 32
HEAD = 32 * 2 + 2
BUFFERS = 2 * 64 * 8  # position_ids and token_type_ids, int64 [1, 64]


def test_weights_gradients_and_optimizer_by_hand(tiny_model_dir):
    total = EMBEDDINGS + 2 * LAYER + HEAD  # the encoder's pooler is dropped: the head pools itself
    full = training_memory(str(tiny_model_dir), "full", batch_size=4, max_length=16, head="linear")
    assert full.total_params == full.trainable_params == total
    assert full.weights == 4 * total + BUFFERS
    assert full.gradients == 4 * total and full.optimizer == 2 * 4 * total
    head = training_memory(str(tiny_model_dir), "head_only", batch_size=4, max_length=16, head="linear",
                           pool_layers=1, examples=100)
    assert head.trainable_params == HEAD and head.gradients == 4 * HEAD and head.optimizer == 8 * HEAD
    assert head.cached_features == 100 * 32 * 4  # one pooled vector per training text
    lora = training_memory(str(tiny_model_dir), "lora", batch_size=4, max_length=16, head="linear",
                           method_options={"lora_r": 4})
    # LoRA r=4 on query and value of 2 layers: A [4, 32] and B [32, 4] each; peft adds a trainable head copy
    assert lora.trainable_params == 2 * 2 * (4 * 32 + 32 * 4) + HEAD
    assert lora.total_params == total + 2 * 2 * (4 * 32 + 32 * 4) + HEAD


@pytest.mark.parametrize("method", ["full", "lora", "bitfit", "adapter", "prefix", "ia3"])
def test_activations_equal_what_a_real_forward_saves(tiny_model_dir, method):
    """The meta-device count equals autograd's saved tensors in a real forward of the same shape."""
    from transferkit.config.finetune import MethodConfig
    from transferkit.modeling.resolve import build_classifier, resolve_model
    from transferkit.core.registry import METHODS
    batch, length = 3, 20
    est = training_memory(str(tiny_model_dir), method, batch_size=batch, max_length=length, head="linear")
    m = METHODS.get(method)(MethodConfig.from_dict({"name": method}))
    model = m.apply(build_classifier(resolve_model(str(tiny_model_dir)), ["a", "b"], "mean", 0.1)).train()
    own = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s._cdata not in own:
            seen[s._cdata] = s.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=torch.randint(5, 100, (batch, length)), attention_mask=torch.ones(batch, length, dtype=torch.long),
              labels=torch.zeros(batch, dtype=torch.long))
    # equal but for the mean-pooling mask (float [batch, length, 1] and its row sums), which the meta pass,
    # run without a mask, does not build: 4 * batch * (length + 1) bytes, under 0.1% of the total here
    assert est.activations == sum(seen.values()) - 4 * batch * (length + 1)
    assert est.activations > 0 and est.total > est.weights


def test_activations_grow_with_batch_and_length(tiny_model_dir):
    a = training_memory(str(tiny_model_dir), "full", batch_size=4, max_length=16)
    b = training_memory(str(tiny_model_dir), "full", batch_size=8, max_length=16)
    c = training_memory(str(tiny_model_dir), "full", batch_size=4, max_length=32)
    assert b.activations == pytest.approx(2 * a.activations, rel=0.02)
    assert c.activations > 2 * a.activations  # attention grows with the square of the length
    with pytest.raises(UserError, match="max_length 65 exceeds the model's limit of 64"):
        training_memory(str(tiny_model_dir), "full", batch_size=4, max_length=65)


def test_sizes_and_durations():
    assert parse_memory("8GB") == 8 * 2**30 and parse_memory("512 MiB") == 512 * 2**20 and parse_memory("16") == 16 * 2**30
    assert parse_duration("3h") == 10800 and parse_duration("90m") == 5400 and parse_duration("2 days") == 172800
    for bad in ("lots", "-3GB", "nanGB", "1e400GB", "0.5KB"):
        with pytest.raises(UserError, match="--memory"):
            parse_memory(bad)
    for bad in ("soon", "-1h", "0s", "400d", "infh"):
        with pytest.raises(UserError, match="--time-budget"):
            parse_duration(bad)


# ---- the rules of thumb -------------------------------------------------------------------------------

def _plans(model: str, hw: Hardware, rows: int, length: int = 128, methods=("full", "lora", "head_only", "adapter", "ia3", "bitfit", "prefix")):
    return [plan_method(m, model, hw, TrainConfig(), rows=rows, max_length=length) for m in methods]


def _data(rows: int, smallest: int | None = None) -> dict:
    return {"train_rows": rows, "validation_rows": rows // 8, "test_rows": rows // 8, "classes": 2,
            "smallest_class_rows": rows // 2 if smallest is None else smallest}


def test_big_data_one_gpu_three_days_is_full_finetuning():
    hw = Hardware("cuda", 16 * GB, 8, here=False)
    plans = _plans("bert-base-uncased", hw, 100_000)
    name, reasons = recommend(plans, _data(100_000), hw, tasks=1, budget_s=3 * 86400)
    assert name == "full", reasons
    assert "100,000 training rows" in reasons[0]
    full = next(p for p in plans if p.method == "full")
    assert full.fits and 1.2 * GB < full.memory.total < 4 * GB  # bert-base, batch 16, 128 tokens


def test_little_data_small_gpu_is_lora_with_augmentation():
    hw = Hardware("cuda", 8 * GB, 8, here=False)
    name, reasons = recommend(_plans("bert-base-uncased", hw, 500), _data(500), hw, tasks=1, budget_s=None)
    assert name == "lora"
    assert "overfits" in reasons[0] and "augment" in reasons[0]


def test_few_shot_is_setfit_unless_many_tasks_share_a_base():
    hw = Hardware("cuda", 8 * GB, 8, here=False)
    plans = _plans("bert-base-uncased", hw, 16, methods=("full", "lora", "head_only", "setfit"))
    name, reasons = recommend(plans, _data(16, smallest=8), hw, tasks=1, budget_s=None)
    assert name == "setfit" and "8 training rows in the smallest class: few-shot" in reasons[0]
    assert recommend(plans, _data(16, smallest=8), hw, tasks=20, budget_s=None)[0] == "lora"  # adapters share
    assert recommend(plans, _data(400, smallest=200), hw, tasks=1, budget_s=None)[0] == "lora"  # not few-shot


def test_setfit_is_planned_with_its_pair_stage():
    """Stage 1 is full fine-tuning on both texts of each pair: its memory, not the head's, is the run's peak."""
    hw = Hardware("cuda", 8 * GB, 8, here=False)
    train = TrainConfig()
    setfit = plan_method("setfit", "bert-base-uncased", hw, train, rows=16, max_length=64)
    # 20 rounds x 16 examples x (one same-label + one other-label pair) = 640 pairs, 16 a step
    assert setfit.stage["what"] == "640 sentence pairs" and setfit.stage["steps"] == 40
    assert setfit.stage["batch_size"] == 32 and setfit.stage["like"] == "full" and setfit.fits
    full32 = training_memory("bert-base-uncased", "full", batch_size=32, max_length=64)
    assert setfit.memory.total == full32.total and setfit.stage["memory_mb"] == round(full32.total / 2**20, 1)
    assert setfit.artefact_bytes == setfit.memory.weights  # a whole model folder per task
    fewer = plan_method("setfit", "bert-base-uncased", hw, train, rows=16, max_length=64,
                        options={"setfit_iterations": 5, "setfit_batch_size": 8, "setfit_epochs": 2.0})
    assert fewer.stage["what"] == "160 sentence pairs" and fewer.stage["steps"] == 40 and fewer.stage["batch_size"] == 16
    uneven = plan_method("setfit", "bert-base-uncased", hw, train, rows=9, max_length=64, classes=3,
                         class_counts=[5, 3, 1])  # the lone example has no same-label partner
    assert uneven.stage["what"] == f"{20 * (5 + 3 + 9):,} sentence pairs"
    full16 = training_memory("bert-base-uncased", "full", batch_size=16, max_length=64)
    snug = Hardware("cuda", int((full16.total + full32.total) / 2 / 0.9), 8, here=False)  # 16 texts fit, 32 do not
    halved = plan_method("setfit", "bert-base-uncased", snug, train, rows=16, max_length=64)
    assert halved.fits and halved.stage["batch_size"] == 16 and halved.stage["steps"] == 80
    assert halved.stage["override"] == {"method.setfit_batch_size": 8} and setfit.stage["override"] is None
    tight = plan_method("setfit", "bert-base-uncased", Hardware("cuda", 1 * GB, 8, here=False), train, rows=16,
                        max_length=64)
    assert not tight.fits and not tight.stage["fits"] and tight.stage["batch_size"] == 2  # halved to one pair
    assert plan_method("head_only", "bert-base-uncased", Hardware("cuda", 1 * GB, 8, here=False), train, rows=16,
                       max_length=64).fits  # what setfit's second stage trains would fit
    setfit.dry_run = {"samples_per_s": 1000.0, "eval_samples_per_s": 100.0, "peak_mb": 0}
    setfit.stage["samples_per_s"] = 64.0
    project_time(setfit, 16, 16, 100, cached=True)
    assert setfit.stage["train_seconds"] == 40 * 32 / 64.0
    assert setfit.total_seconds == round(setfit.train_seconds + setfit.eval_seconds + 20.0, 1)


def test_small_sets_are_planned_with_the_steps_the_run_will_take():
    hw = Hardware("cuda", 8 * GB, 8, here=False)
    lora = plan_method("lora", "bert-base-uncased", hw, TrainConfig(), rows=160, max_length=64)
    assert lora.steps == 300 and lora.eval_steps == 20  # 10 steps an epoch: 30 epochs, validated 15 times
    lora.dry_run = {"samples_per_s": 16.0, "eval_samples_per_s": 20.0, "peak_mb": 0}
    project_time(lora, 160, 20, 20)
    assert lora.eval_seconds == 15 * 20 / 20.0 and lora.train_seconds == 300.0
    bare = plan_method("lora", "bert-base-uncased", hw, TrainConfig(min_steps=0), rows=160, max_length=64)
    assert bare.steps == 30 and bare.eval_steps is None
    bare.dry_run = lora.dry_run
    project_time(bare, 160, 20, 20)
    assert bare.eval_seconds == 3 * 20 / 20.0  # after each of the 3 epochs


def test_twenty_tasks_is_lora_adapters_on_one_base():
    hw = Hardware("cuda", 16 * GB, 8, here=False)
    for rows in (5_000, 100_000):  # with a lot of data each, too: 20 copies of the model cost more than adapters
        name, reasons = recommend(_plans("bert-base-uncased", hw, rows), _data(rows), hw, tasks=20, budget_s=None)
        assert name == "lora", reasons
        assert "20 task models" in reasons[0] and "one shared base" in reasons[0]


def test_a_model_that_fits_nowhere():
    hw = Hardware("cuda", 1 * GB, 8, here=False)
    plans = _plans("bert-large-uncased", hw, 10_000, length=512)
    assert all(p.batch_size == 1 for p in plans) and not any(p.fits for p in plans)  # halved down to 1, still too big
    name, reasons = recommend(plans, _data(10_000), hw, tasks=1, budget_s=None)
    assert name is None and "nothing fits in 1.0 GB" in reasons[0]


def test_a_batch_that_does_not_fit_is_halved_with_accumulation():
    hw = Hardware("cuda", 3 * GB, 8, here=False)
    full = plan_method("full", "bert-base-uncased", hw, TrainConfig(), rows=10_000, max_length=512)
    assert full.fits and full.batch_size < 16 and full.batch_size * full.grad_accum >= 16


def test_two_core_cpu_with_a_deadline_takes_what_finishes():
    """100,000 rows on a 2-core CPU in 3 hours: full and LoRA would take days; the rule says why."""
    hw = Hardware("cpu", 20 * GB, 2, here=True)
    plans = _plans("bert-base-uncased", hw, 100_000, methods=("full", "lora", "head_only"))
    rates = {"full": 4.6, "lora": 9.0, "head_only": 20_000.0}  # samples/s of the kind measured on such a CPU
    for p in plans:
        p.dry_run = {"samples_per_s": rates[p.method], "eval_samples_per_s": 60.0, "peak_mb": 0}
        project_time(p, 100_000, 12_500, 12_500, cached=p.method == "head_only")
    name, reasons = recommend(plans, _data(100_000), hw, tasks=1, budget_s=3 * 3600)
    assert name == "head_only", reasons
    assert "full, lora would not finish within 3.0 h" in reasons[0]
    name, reasons = recommend(plans, _data(100_000), hw, tasks=1, budget_s=600)  # nothing in 10 minutes
    assert name == "head_only" and "no method finishes within 10.0 min" in reasons[0]


# ---- end to end ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("plan") / "d.csv", make_sentences(160, seed=4))


def test_plan_with_dry_runs_writes_a_config_finetune_runs(tiny_model_dir, data_csv, tmp_path):
    out = tmp_path / "plan"
    result = api.plan(data=str(data_csv), model=str(tiny_model_dir), dry_run_steps=3, output_dir=out)
    assert {p.method for p in result.methods} == {"full", "lora", "adapter", "prefix", "ia3", "bitfit", "head_only",
                                                   "setfit"}
    for p in result.methods:
        assert p.fits and p.dry_run["samples_per_s"] > 0 and p.dry_run["timed_steps"] == 2
        assert p.total_seconds > 0 and p.train_seconds > 0 and p.dry_run["peak_mb"] >= 0
    setfit = next(p for p in result.methods if p.method == "setfit")
    assert setfit.stage["samples_per_s"] > 0 and 0 < setfit.stage["train_seconds"] < setfit.total_seconds
    assert "setfit first trains" in result.table
    assert result.recommended == "lora" and "overfits" in result.reasons[0]  # 128 training rows, 64 a class
    saved = json.loads((out / "plan.json").read_text())
    assert saved["recommended"] == "lora" and len(saved["methods"]) == 8
    assert saved["methods"][0]["memory_mb"]["total"] > 0
    assert "recommended: lora" in result.table
    run = api.finetune(str(out / "run.yaml"), output_dir=str(tmp_path / "run"), max_steps=3,
                       **{"train.progress": False})
    assert json.loads((run.run_dir / "run.json").read_text())["method"] == "lora"


def test_a_few_shot_plan_recommends_setfit_and_its_config_trains(tiny_model_dir, tmp_path):
    few = write_csv(tmp_path / "few.csv", make_sentences(24, seed=2))  # about 10 training rows a class
    result = api.plan(data=str(few), model=str(tiny_model_dir), dry_run_steps=2, methods="lora,setfit",
                      output_dir=tmp_path / "plan")
    few_rows = result.data["smallest_class_rows"]
    assert result.recommended == "setfit" and f"{few_rows} training rows in the smallest class" in result.reasons[0]
    stage = next(p for p in result.methods if p.method == "setfit").stage
    assert stage["largest_batch"] == 32 > result.data["train_rows"]  # 16 pairs a step: 32 texts from fewer rows
    run = api.finetune(str(tmp_path / "plan" / "run.yaml"), output_dir=str(tmp_path / "run"), max_steps=2,
                       **{"train.progress": False, "method.setfit_iterations": 2})
    assert run.metrics["train"]["contrastive"]["pairs"] > 0


def test_plan_cli(tiny_model_dir, data_csv, tmp_path, capsys):
    out = tmp_path / "p"
    assert cli.main(["plan", "--data", str(data_csv), "--model", str(tiny_model_dir), "--no-dry-run",
                     "--tasks", "20", "--methods", "lora,full,head_only", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "recommended: lora" in printed and "20 task models" in printed and "run.yaml" in printed
    assert json.loads((out / "plan.json").read_text())["tasks"] == 20
    assert cli.main(["plan", "--data", str(data_csv), "--model", str(tiny_model_dir), "--memory", "16GB",
                     "--device", "cuda", "--output-dir", str(tmp_path / "q")]) == 0
    assert "no dry run: the machine planned for is not this one" in capsys.readouterr().out


@pytest.mark.parametrize("argv, msg", [
    (["--memory", "lots"], "--memory 'lots': expected a size"),
    (["--time-budget=-3h"], "--time-budget '-3h'"),
    (["--tasks", "0"], "--tasks 0: must be an integer in [1, 10000]"),
    (["--methods", "lora,magic"], "magic"),
    (["--dry-run-steps", "1"], "--dry-run-steps 1"),
    (["--no-dry-run", "--dry-run-steps", "3"], "give one"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_model_dir, data_csv, tmp_path, capsys, argv, msg):
    out = tmp_path / "bad"
    assert cli.main(["plan", "--data", str(data_csv), "--model", str(tiny_model_dir), "--output-dir", str(out),
                     *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cuda_on_a_machine_without_one_needs_the_memory(tiny_model_dir, data_csv):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match="no GPU; give --memory"):
        PlanRun(api.make_config(None, {"data.data": str(data_csv), "model.name": str(tiny_model_dir)}), device="cuda")


@pytest.mark.parametrize("storage", ["memory", "mapped"])
def test_plan_for_a_tagger(tiny_model_dir, tmp_path, monkeypatch, storage):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    lines = []
    for i in range(40):
        lines += [f"{w} {t}" for w, t in [("good", "B-PER"), ("film", "O"), ("bad", "B-LOC"), ("plot", "O")][: 2 + i % 3]]
        lines += [f"w{i % 7} O", ""]
    (tmp_path / "t.conll").write_text("\n".join(lines), encoding="utf-8")
    result = api.plan(task="ner", data=str(tmp_path / "t.conll"), model=str(tiny_model_dir), dry_run_steps=2,
                      methods="lora,full,head_only", **{"data.dedupe": False, "data.storage": storage})
    assert {p.method for p in result.methods} == {"lora", "full", "head_only"}
    assert all(p.dry_run["samples_per_s"] > 0 for p in result.methods) and result.recommended == "lora"
    if storage == "memory":  # setfit (pairs of sentence vectors) is left out of a tagger's plan, and refused by name
        every = api.plan(task="ner", data=str(tmp_path / "t.conll"), model=str(tiny_model_dir), dry_run_steps=0,
                         **{"data.dedupe": False})
        assert "setfit" not in {p.method for p in every.methods} and "lora" in {p.method for p in every.methods}
        with pytest.raises(UserError, match="method setfit trains on pairs of sentence vectors with one class label each; a ner run"):
            api.plan(task="ner", data=str(tmp_path / "t.conll"), model=str(tiny_model_dir), methods="setfit")


def test_the_dry_run_sample_takes_mapped_rows(data_csv, tmp_path, monkeypatch):
    """Mapped texts (and mapped tagged sentences) are sampled with their labels, not left whole."""
    from transferkit.config.finetune import DataConfig
    from transferkit.tasks.classify.splits import prepare_splits
    from transferkit.tasks.ner.splits import prepare_tagged_splits
    from transferkit.recipes.plan_dry_run import sample_rows as _rows
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    train = prepare_splits(DataConfig(data=str(data_csv), storage="mapped"), 0).train
    part = _rows(train, [0, 3, 5])
    assert len(part.texts) == len(part.labels) == 3 and list(part.texts) == [train.texts[i] for i in (0, 3, 5)]
    tagged = prepare_tagged_splits(DataConfig(data=str(write_conll(tmp_path / "t.conll", 60)), storage="mapped"),
                                   0).train
    part = _rows(tagged, [1, 4])
    assert len(part) == 2 and list(part.tokens) == [tagged.tokens[1], tagged.tokens[4]]
    assert list(part.tags) == [tagged.tags[1], tagged.tags[4]]
