"""transferkit: turn a pretrained transformer into a task model.

    import transferkit
    result = transferkit.finetune(data="movie-sentences", method="lora", epochs=1)
    transferkit.Predictor.from_run(result.run_dir).predict(["a fine film"])
    transferkit.pipeline("sentiment-analysis", model=result.run_dir)("a fine film")
    transferkit.pretrain(objective="mlm", corpus=["wiki-summaries"], model="minilm-l6")
"""
import logging as _logging
import os as _os

# On a shared 2-core machine, spinning OpenMP threads made a training step 2.5-6x slower whenever
# another process held a core (PERFORMANCE.md); passive waiting removed that. It must be set before
# torch loads OpenMP, hence here; a value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .api import (augment, compare, evaluate, export, fill_mask, finetune, generate, list_datasets, list_models,
                  make_config, params, plan, predict, pretrain, serve, tune)
from .config.finetune import RunConfig
from .core import logs as _logs
from .core.errors import UserError
from .modeling.classifier import register as _register

# A library shows nothing until the application says where its lines go (logging.basicConfig, log_to_stderr).
_logging.getLogger(__name__).addHandler(_logging.NullHandler())


def log_to_stderr(level: int = _logging.INFO) -> None:
    """Show transferkit's progress lines on stderr as the CLI does (a notebook, a script): `level`
    logging.DEBUG for more, logging.WARNING for warnings only."""
    _logs.to_stderr(level)


def __getattr__(name: str):  # Predictor imports torch; load it only when asked for
    if name == "Predictor":
        from .inference import Predictor
        return Predictor
    if name == "pipeline":
        from .inference.pipelines import pipeline
        return pipeline
    raise AttributeError(name)


_register()

__all__ = ["pretrain", "finetune", "compare", "evaluate", "predict", "export", "params", "fill_mask", "generate",
           "list_datasets", "list_models", "make_config", "RunConfig", "UserError", "Predictor", "pipeline", "serve", "plan", "tune",
           "augment", "log_to_stderr"]
__version__ = "0.1.0"
