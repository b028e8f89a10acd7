"""Loading a finished run's model back: its method with the recorded options, the base encoder the
artefact goes on top of, and the trained model; and the labelled split a run is scored on.

The run record itself (`run.json`, read strictly) is `core.runs.RunInfo`; this module is where the record
meets the methods, the tasks and the model files. It cannot send loading to an arbitrary folder: a bundled
base resolves through the registry whatever `model_path` says, and a local base folder is used only if this
machine fine-tuned from it (the list in the transferkit cache) or the user names it (`base_model=`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import tasks
from ..config.base import section_from_dict
from ..config.finetune import MethodConfig, RunConfig
from ..core import logs
from ..core.errors import UserError
from ..core.folders import check_finite, check_folder, loading
from ..core.runs import RUN_FILE, RunInfo, is_trusted_base
from ..data.fingerprint import check_fingerprints
from ..modeling.classifier import TransferkitForSequenceClassification as Classifier
from ..modeling.resolve import MODELS, ResolvedModel, check_head, check_model_head, resolve_model


def run_method(info: RunInfo) -> Any:
    """The run's method object, built with the options the run recorded."""
    options = section_from_dict(MethodConfig, {**info.method_options, "name": info.method},
                                f"{Path(info.run_dir) / RUN_FILE} method_options")
    return info.method_class()(options)


def run_task(info: RunInfo) -> Any:
    """The run's task object with the run's head settings; an unknown task name is a one-line error naming
    run.json."""
    try:
        task = tasks.get(info.task)
    except UserError as e:
        raise UserError(f"{Path(info.run_dir) / RUN_FILE}: {e}") from None
    task.head = dict(check_head(info.head, len(info.label_names), f"{Path(info.run_dir) / RUN_FILE} head"))
    return task


def run_base(info: RunInfo, override: str | None = None) -> ResolvedModel:
    """The ResolvedModel the run's artefact goes on top of (see the module docstring)."""
    if override is not None:
        return resolve_model(override)
    if info.model_name in MODELS:
        return resolve_model(info.model_name)
    where = Path(info.run_dir) / RUN_FILE
    p = Path(info.model_path)
    if not p.is_absolute() and not p.exists():  # a hub name: only a copy already in the local cache
        from transformers import AutoConfig  # heavy: only for runs on a hub model
        try:
            AutoConfig.from_pretrained(info.model_path, local_files_only=True)
        except Exception:  # noqa: BLE001 - not cached, or not a hub name at all
            raise UserError(f"{where} names the base model {info.model_path!r}, which is not a folder here nor in "
                            f"the local model cache; pass --base-model DIR") from None
        return ResolvedModel(info.model_name, info.model_path, info.pooling, local_only=True)
    if not p.is_dir():
        raise UserError(f"{where}: its base model folder {p} does not exist here; "
                        f"pass --base-model DIR (base_model=...) with the model it was trained from")
    if not is_trusted_base(p):
        raise UserError(f"{where} names the base model folder {p}, which no run on "
                        f"this machine was trained from; if you trust it, pass --base-model {p}")
    return ResolvedModel(info.model_name, str(p), info.pooling)


def load_run_model(info: RunInfo, merge: bool = False, base_model: str | None = None) -> Any:
    """The trained model; `merge=True` gives the fastest equivalent for inference.

    Every file is checked first (safetensors headers, JSON, no pickle weights), and whatever a
    library still raises is a one-line error naming the artefact."""
    method = run_method(info)
    art = check_folder(info.artifact_dir, method.artifact_files, what=f"{info.method} artefact")
    task = run_task(info)

    def base() -> Any:
        return task.build_model(run_base(info, base_model), info.label_names, info.pooling,
                                info.classifier_dropout, info.head_hidden, info.pool_layers)
    with loading(art, f"{info.method} run"):
        model = method.load(art, base)
        model = method.for_inference(model) if merge else model
    check_finite(model, art)
    check_model_head(model, str(art))
    return model


def merged_model(info: RunInfo, base_model: str | None = None) -> nn.Module:
    """The run's inference model with its method folded into the encoder's weights (what an export writes and
    an onnxruntime graph is traced from), or a UserError for methods whose inference model keeps modules of its
    own (adapter, prefix)."""
    model = load_run_model(info, merge=True, base_model=base_model).eval()
    extra = extra_weights(model)
    if extra:
        raise UserError(f"{info.run_dir}: method {info.method!r} cannot be merged into the encoder's weights (its "
                        f"inference model keeps its own modules, e.g. {extra[0]}); export supports methods "
                        f"that fold into the weights: full, lora, ia3, bitfit, head_only, setfit")
    return model


def extra_weights(model: nn.Module) -> list[str]:
    """Weights the plain classifier class does not have (all of them if `model` is another class; none for a
    plain transformers model without adapter modules, such as a generation run's merged causal LM)."""
    if not isinstance(model, Classifier):
        from peft.tuners.tuners_utils import BaseTunerLayer
        from transformers import PreTrainedModel
        if isinstance(model, PreTrainedModel) and not any(isinstance(m, BaseTunerLayer) for m in model.modules()):
            return []
        return [type(model).__name__]
    with torch.device("meta"):  # structure only: no memory, no initialisation cost
        plain = Classifier(model.config)
    return sorted(set(model.state_dict()) - set(plain.state_dict()))


def labelled_split(run_dir: Any, info: RunInfo, task: Any, data: str | None, text_column: str | None,
                   label_column: str | None) -> tuple[Any, str]:
    """The labelled examples to score: the run's own test split (its data files checked), or `data`."""
    if data is not None:
        return task.load_labelled(data, info.label_names, text_column, label_column), str(data)
    cfg = RunConfig.from_yaml(Path(run_dir) / "config.yaml")
    if not info.data_fingerprints:
        raise UserError(f"{run_dir} records no hashes of its data files (an older run), so its test split cannot "
                        f"be checked; pass --data FILE to score a labelled file")
    check_fingerprints(info.data_fingerprints, cfg.data)
    with logs.quiet():  # the split's summary was shown when the run trained
        splits = task.prepare(cfg.data, cfg.train.seed)
    return splits.test, f"{cfg.data.data or cfg.data.test} (test split)"
