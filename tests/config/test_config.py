"""Run configuration: YAML round trip, dotted overrides, and errors that name the key."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transferkit.api import make_config
from transferkit.config.finetune import RunConfig
from transferkit.config.checks import validate
from transferkit.core.errors import UserError


def test_defaults_validate():
    from transferkit.api import make_config
    cfg = make_config()  # no data named at all: the bundled dataset
    validate(cfg)
    assert (cfg.data.data, cfg.model.name, cfg.method.name) == ("movie-sentences", "minilm-l6", "full")
    assert make_config(None, {"data.train": "a.csv", "data.test": "b.csv"}).data.data is None
    assert cfg.data.split == [0.8, 0.1, 0.1]
    gen = make_config(None, {"task": "generate"})  # each task's own defaults
    assert (gen.data.data, gen.model.name) == ("bbc-headlines", "smollm2-135m")


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig()
    cfg.data.data = "reviews.csv"
    cfg.data.split = [0.7, 0.2, 0.1]
    cfg.method.name = "lora"
    cfg.method.target_modules = ["query", "key"]
    cfg.method.lora_alpha = 32.0
    cfg.train.lr = 3e-4
    cfg.train.max_steps = 50
    cfg.train.group_by_length = False
    cfg.output_dir = "runs/x"
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    back = RunConfig.from_yaml(path)
    assert back == cfg
    assert back.to_dict() == cfg.to_dict()
    assert "lr: 0.0003" in cfg.to_yaml()


def test_partial_yaml_keeps_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1.0e-4\n  batch_size: 8\nmethod:\n  name: lora\n")
    cfg = RunConfig.from_yaml(path)
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.batch_size == 8 and cfg.method.name == "lora"
    assert cfg.train.seed == 42 and cfg.model.name is None  # the task's model, filled in by apply_default_data
    (tmp_path / "empty.yaml").write_text("")
    assert RunConfig.from_yaml(tmp_path / "empty.yaml") == RunConfig()


def test_yaml_exponent_without_dot(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-4\n  head_lr: 5E-3\n")
    cfg = RunConfig.from_yaml(path)
    assert (cfg.train.lr, cfg.train.head_lr) == (1e-4, 5e-3)


@pytest.mark.parametrize("key,text,value", [
    ("train.lr", "3e-4", 3e-4),
    ("train.lr", "0.001", 0.001),
    ("train.epochs", "2", 2.0),
    ("train.batch_size", "32", 32),
    ("train.batch_size", "32.0", 32),
    ("train.max_steps", "null", None),
    ("train.group_by_length", "false", False),
    ("train.progress", "true", True),
    ("data.split", "0.7,0.15,0.15", [0.7, 0.15, 0.15]),
    ("data.split", "[0.6, 0.2, 0.2]", [0.6, 0.2, 0.2]),
    ("method.target_modules", "query,key, value", ["query", "key", "value"]),
    ("method.lora_alpha", "16", 16.0),
    ("model.name", "some-org/some-model", "some-org/some-model"),
    ("data.text_column", "review", "review"),
    ("output_dir", "runs/a", "runs/a"),
])
def test_override_parsing(key, text, value):
    cfg = RunConfig()
    if key.startswith("method."):
        cfg.override("method.name", "lora")  # a method's options exist once it is chosen
    cfg.override(key, text)
    section, _, name = key.rpartition(".")
    got = getattr(getattr(cfg, section) if section else cfg, name)
    assert got == value and type(got) is type(value)


def test_string_override_is_kept_verbatim():
    cfg = RunConfig()
    cfg.override("output_dir", "007")
    cfg.override("data.text_column", "yes")
    assert (cfg.output_dir, cfg.data.text_column) == ("007", "yes")


@settings(max_examples=50, deadline=None)
@given(lr=st.floats(min_value=1e-9, max_value=10, allow_nan=False), bs=st.integers(1, 10_000),
       seed=st.integers(0, 2**31 - 1))
def test_override_round_trips_numbers(lr, bs, seed):
    cfg = make_config(None, {"train.lr": repr(lr), "train.batch_size": str(bs), "train.seed": seed})
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.seed) == (lr, bs, seed)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("key", ["train.lrr", "nope.lr", "train", "data", "train.lr.x", "lr", "method.lora_r.a"])
def test_unknown_override_names_the_key(key):
    with pytest.raises(UserError, match=f"unknown config key {key!r}"):
        RunConfig().override(key, "1")


@pytest.mark.parametrize("d,key", [({"train": {"lrr": 1}}, "train.lrr"), ({"optim": {}}, "optim"),
                                   ({"model": {"name": "x", "heads": 2}}, "model.heads")])
def test_unknown_key_in_a_mapping(d, key):
    with pytest.raises(UserError, match=f"unknown config key {key!r}"):
        RunConfig.from_dict(d)


@pytest.mark.parametrize("key,value,expected", [
    ("train.batch_size", "big", "expected an integer"),
    ("train.batch_size", "2.5", "expected an integer"),
    ("train.batch_size", True, "expected an integer"),
    ("train.lr", "fast", "expected a number"),
    ("train.lr", False, "expected a number"),
    ("train.progress", "maybe", "expected true or false"),
    ("train.progress", 1, "expected true or false"),
    ("data.split", "0.8,x,0.1", "expected a number"),
    ("model.name", ["a", "b"], "expected a string"),
])
def test_wrong_type_names_the_key(key, value, expected):
    with pytest.raises(UserError, match=rf"config key '{key}': {expected}"):
        RunConfig().override(key, value)


def test_wrong_type_in_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: many\n")
    with pytest.raises(UserError, match="config key 'train.epochs': expected a number"):
        RunConfig.from_yaml(path)
    path.write_text("train: 3\n")
    with pytest.raises(UserError, match="'train': expected a mapping"):
        RunConfig.from_yaml(path)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        RunConfig.from_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(UserError, match="expected a mapping at the top level"):
        RunConfig.from_yaml(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("train: {lr: [\n")
    with pytest.raises(UserError, match="not valid YAML"):
        RunConfig.from_yaml(tmp_path / "bad.yaml")


@pytest.mark.parametrize("key,value,message", [
    ("train.lr", 0, "train.lr must be > 0"),
    ("train.lr", -1e-4, "train.lr must be > 0"),
    ("train.head_lr", 0, "train.head_lr must be > 0"),
    ("train.batch_size", 0, "train.batch_size must be > 0"),
    ("train.grad_accum", 0, "train.grad_accum must be > 0"),
    ("train.early_stopping_patience", -1, "train.early_stopping_patience must be >= 0"),
    ("train.epochs", 0, "train.epochs must be > 0"),
    ("train.max_steps", 0, "train.max_steps must be > 0"),
    ("train.weight_decay", -0.1, "train.weight_decay must be >= 0"),
    ("train.warmup", 1.0, r"train.warmup must be in \[0, 1\)"),
    ("train.max_grad_norm", -1, "train.max_grad_norm must be >= 0"),
    ("train.eval_steps", 0, "train.eval_steps must be > 0"),
    ("train.checkpoint_steps", 0, "train.checkpoint_steps must be > 0"),
    ("method.lora_r", 0, "method.lora_r must be > 0"),
    ("method.lora_dropout", 1.0, "method.lora_dropout must be in"),
    ("model.classifier_dropout", -0.1, "model.classifier_dropout must be in"),
    ("model.pooling", "max", "model.pooling must be auto, mean or cls"),
    ("data.split", [0.5, 0.5, 0.5], "data.split must be three non-negative fractions summing to 1"),
    ("data.split", [0.9, 0.1], "data.split must be three"),
    ("data.max_length", 4, "data.max_length must be >= 8"),
    ("data.limit", 0, "data.limit must be > 0"),
])
def test_validate_names_the_key(key, value, message):
    cfg = RunConfig()
    if key.startswith("method."):
        cfg.override("method.name", "lora")
    cfg.override(key, value)
    with pytest.raises(UserError, match=message):
        validate(cfg)


def test_make_config_sources(tmp_path):
    base = RunConfig()
    base.train.lr = 1e-3
    cfg = make_config(base, {"train.seed": "7"})
    assert cfg.train.lr == 1e-3 and cfg.train.seed == 7
    assert base.train.seed == 42  # the given config is not modified
    assert make_config({"method": {"name": "lora"}}).method.name == "lora"
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert make_config(str(path)) == cfg


def test_partial_section_keeps_the_parent_default(tmp_path):
    """A pretraining YAML that sets only train.lr keeps pretraining's metric (loss), not finetune's."""
    from transferkit.config.pretrain import PretrainConfig
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  lr: 0.001\n", encoding="utf-8")
    cfg = PretrainConfig.from_yaml(path)
    assert cfg.train.lr == 0.001 and cfg.train.metric == "loss" and cfg.train.early_stopping_patience == 0


def test_a_method_section_holds_that_methods_options_only():
    lora = make_config(None, {"method.lora_r": 4, "method.name": "lora"})  # any order: the method is chosen first
    assert lora.to_dict()["method"] == {"name": "lora", "lora_r": 4, "lora_alpha": None, "lora_dropout": 0.1,
                                        "target_modules": None, "use_rslora": False, "use_dora": False,
                                        "lora_plus_ratio": None}
    assert make_config(None, {"method.name": "adapter"}).to_dict()["method"] == {
        "name": "adapter", "adapter_kind": "pfeiffer", "adapter_reduction": 16}
    assert make_config(None, {"method.name": "bitfit"}).to_dict()["method"] == {"name": "bitfit"}
    with pytest.raises(UserError, match=r"'method.prefix_tokens': not an option of method 'lora' \(its options: lora_r"):
        make_config(None, {"method.name": "lora", "method.prefix_tokens": 5})
    with pytest.raises(UserError, match="not an option of method 'full' \\(it has no options\\)"):
        make_config(None, {"method.lora_r": 4})
    ia3 = make_config(None, {"method.name": "lora", "method.target_modules": "query"})
    ia3.override("method.name", "ia3")  # switching keeps the options both methods have
    assert ia3.to_dict()["method"] == {"name": "ia3", "target_modules": ["query"]}


def test_a_flat_method_section_from_before_still_reads(tmp_path):
    """config.yaml and run.json once listed every method's options in one section: their defaults drop out."""
    old = {"name": "lora", "lora_r": 4, "lora_alpha": None, "lora_dropout": 0.1, "target_modules": None,
           "use_rslora": False, "use_dora": False, "lora_plus_ratio": None, "adapter_kind": "pfeiffer",
           "adapter_reduction": 16, "prefix_tokens": 20}
    cfg = RunConfig.from_dict({"method": old})
    assert cfg.method.lora_r == 4 and "prefix_tokens" not in cfg.to_dict()["method"]
    with pytest.raises(UserError, match="'method.prefix_tokens': not an option of method 'lora'"):
        RunConfig.from_dict({"method": {**old, "prefix_tokens": 5}})  # a value someone meant: refused
