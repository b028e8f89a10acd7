"""A pretraining run: corpus -> tokenizer -> model -> objective -> Trainer -> RUN_DIR/model.

`PretrainRun(cfg).run()` is the run on the shared skeleton (`recipes/run.py`: setup -> fit -> save,
the run directory claimed or resumed the same way as a fine-tuning run); `transferkit.pretrain` calls it.

    transferkit pretrain --objective mlm --corpus wiki-summaries --model minilm-l6
    transferkit pretrain --objective clm --corpus notes/ --from-scratch --arch gpt2 --size mini --train-tokenizer

The run directory holds config.yaml, metrics.jsonl (training records with tokens/s, held-out
evaluations with loss/perplexity/accuracy), checkpoints/ (resumable with `--resume RUN_DIR`),
tokenizer/ (the tokenizer the run uses, so a resumed run reuses a trained one) and, when finished,
model/ (a Hugging Face folder with the tokenizer: `AutoModelForMaskedLM` / `AutoModelForCausalLM`
load it, and `transferkit finetune --model RUN_DIR/model` fine-tunes its encoder) and metrics.json.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.checks import validate_pretrain
from ..config.finetune import describe_duration
from ..config.pretrain import PretrainConfig
from ..core import fs, runtime
from ..core.errors import UserError
from ..core.folders import check_folder, loading
from ..core.registry import OBJECTIVES
from ..core.runs import new_run_dir
from ..data.corpus import heldout_split, load_documents
from ..modeling import lm as lm_models
from ..modeling.lm import ARCHS, SIZES
from ..training import distributed, tracking
from .run import Run

logger = logging.getLogger(__name__)

# Short names for the most used keys (Python keyword arguments and CLI flags).
PRETRAIN_KEYS = {"objective": "objective", "corpus": "corpus", "text_column": "text_column", "model": "model",
                 "from_scratch": "from_scratch", "arch": "arch", "size": "size", "tokenizer": "tokenizer",
                 "train_tokenizer": "train_tokenizer", "vocab_size": "vocab_size", "max_length": "max_length",
                 "heldout": "heldout", "limit": "limit", "whole_word_mask": "whole_word_mask",
                 "mlm_probability": "mlm_probability", "epochs": "train.epochs", "max_steps": "train.max_steps",
                 "batch_size": "train.batch_size", "lr": "train.lr", "eval_steps": "train.eval_steps",
                 "seed": "train.seed", "output_dir": "output_dir"}


@dataclass
class PretrainResult:
    run_dir: Path
    metrics: dict[str, Any]

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"


def make_pretrain_config(config: str | Path | PretrainConfig | dict | None = None,
                         overrides: dict[str, Any] | None = None) -> PretrainConfig:
    """A PretrainConfig from a YAML path, dict or PretrainConfig, with short or dotted overrides."""
    return PretrainConfig.make(config, overrides, PRETRAIN_KEYS)


def pretrain(config: str | Path | PretrainConfig | dict | None = None, *, resume: str | Path | None = None,
             **overrides: Any) -> PretrainResult:
    """Pretrain (MLM, CLM or MLM+NSP) and write a run directory; see the module docstring."""
    runtime.setup()
    if resume is not None:
        return PretrainRun.resumed(resume, PretrainConfig, overrides, PRETRAIN_KEYS)
    return PretrainRun(make_pretrain_config(config, overrides)).run()


class PretrainRun(Run):
    """A pretraining run of `cfg` (a PretrainConfig); `resume` continues the run directory given."""

    command = "pretrain"

    def prepare(self) -> None:
        """Validate, read and split the corpus, build or load the model and tokenizer (nothing written)."""
        cfg, resume = self.cfg, self.resume
        validate_pretrain(cfg)
        self.objective = objective = OBJECTIVES.get(cfg.objective)
        if not cfg.from_scratch and cfg.model is None:
            raise UserError("name a model to continue pretraining (--model NAME_OR_PATH) or build one (--from-scratch)")
        if cfg.model is not None and cfg.train_tokenizer:
            raise UserError("train_tokenizer needs --from-scratch: an existing model keeps its own tokenizer")
        if cfg.from_scratch and cfg.tokenizer is None and not cfg.train_tokenizer and resume is None:
            raise UserError("a model built from scratch needs a tokenizer: --tokenizer PATH or --train-tokenizer")
        if cfg.from_scratch:
            _check_arch(cfg, objective)
        # checked now, created once every input is valid
        self.run_dir = resume if resume is not None else _new_run_dir(cfg)

        docs = load_documents(cfg.corpus, cfg.text_column, cfg.limit)
        train_idx, held_idx = heldout_split(len(docs), cfg.heldout, cfg.train.seed)
        self.train_docs, self.held_docs = [docs[i] for i in train_idx], [docs[i] for i in held_idx]
        logger.info(f"corpus {', '.join(cfg.corpus)}: {len(docs):,} documents, "
                    f"{sum(len(d.split()) for d in docs):,} words "
                    f"-> {len(self.train_docs):,} training, {len(self.held_docs):,} held out")

        from accelerate.utils import set_seed
        set_seed(cfg.train.seed)
        self.model, self.tokenizer, self.new_params = _model_and_tokenizer(cfg, objective, self.run_dir,
                                                                           self.train_docs)
        vocab = self.model.get_input_embeddings().weight.shape[0]
        if len(self.tokenizer) > vocab:
            raise UserError(f"tokenizer has {len(self.tokenizer)} tokens but the model's embedding table only {vocab}")

    def fit(self) -> Any:
        import torch

        from ..training.loop import Trainer
        cfg, objective, tokenizer = self.cfg, self.objective, self.tokenizer
        run_dir = self.run_dir
        vocab = self.model.get_input_embeddings().weight.shape[0]
        if not (run_dir / "tokenizer").is_dir() and distributed.is_main():
            fs.write_folder(run_dir / "tokenizer", tokenizer.save_pretrained)
        train_data, held_data = objective.prepare(self.train_docs, self.held_docs, tokenizer,
                                                  min(len(tokenizer), vocab), cfg)
        if train_data is None or len(train_data) == 0:
            raise UserError(f"corpus {', '.join(cfg.corpus)} gives no {cfg.objective} training examples")
        self.train_data, self.held_data = train_data, held_data
        self.tcfg = tcfg = resolve_train_config(cfg, objective, bool(self.new_params))
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.accelerator = accelerator = distributed.accelerator(cpu=device.type == "cpu",
                                                                 precision=cfg.train.precision, log_with=self.trackers())
        tracking.start(accelerator, cfg.to_dict(), tcfg)
        wrapped = objective.wrap(self.model, self.new_params)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        eval_bs = max(tcfg.batch_size, 32)
        eval_fn = None
        if held_data is not None and len(held_data):
            def eval_fn(m: Any) -> dict[str, float]:
                st = trainer.state  # the speed goes to the log only: records must not differ when a run resumes
                logger.info(f"step {st.global_step}: {st.tokens_seen:,} tokens trained, "
                            f"{st.tokens_seen / max(st.train_seconds, 1e-9):,.0f} tokens/s")
                return objective.evaluate(m, held_data, eval_bs, pad_id, accelerator.device)
        trainer = Trainer(wrapped, train_data, tcfg, run_dir, accelerator, pad_id, eval_fn=eval_fn,
                          loss_fn=objective.loss_fn)
        self.restore(trainer)
        width = max(train_data.lengths())
        logger.info(f"pretraining {cfg.objective}: {len(train_data):,} sequences of up to {width} tokens, "
                    f"lr {tcfg.lr:g}"
                    + (f" (new head weights {tcfg.head_lr:g})" if self.new_params else "")
                    + f", {describe_duration(tcfg)} = {trainer.total_steps} steps of "
                    f"{tcfg.batch_size * tcfg.grad_accum}, {accelerator.device}")
        self.state = trainer.fit()
        self.trainer = trainer
        self.model = accelerator.unwrap_model(trainer.model).model
        return self.state

    def save(self) -> PretrainResult:
        cfg, model, tokenizer, state = self.cfg, self.model, self.tokenizer, self.state
        run_dir, tcfg, train_data, held_data = self.run_dir, self.tcfg, self.train_data, self.held_data
        if not distributed.is_main():  # rank 0 writes the run directory
            return PretrainResult(run_dir, {})
        fs.write_folder(run_dir / "model", lambda d: (model.save_pretrained(d), tokenizer.save_pretrained(d)))
        tokens_per_s = state.tokens_seen / max(state.train_seconds, 1e-9)
        held = state.best_metrics or {}
        metrics = {"objective": cfg.objective, "heldout": held,
                   "train": {"steps": state.global_step,
                             "epochs": round(state.global_step / self.trainer.steps_per_epoch, 3),
                             "tokens": state.tokens_seen, "scored_tokens": state.samples_seen,
                             "seconds": round(state.train_seconds, 2), "tokens_per_s": round(tokens_per_s, 1),
                             "lr": tcfg.lr, "head_lr": tcfg.head_lr, "batch_size": tcfg.batch_size,
                             "best_step": state.best_step},
                   "data": {"corpus": cfg.corpus,
                            "documents": {"train": len(self.train_docs), "heldout": len(self.held_docs)},
                            "sequences": {"train": len(train_data), "heldout": len(held_data) if held_data else 0},
                            "max_length": max(train_data.lengths())},
                   "model": {"start": cfg.model or f"scratch:{cfg.arch}-{cfg.size}", "class": type(model).__name__,
                             "parameters": sum(p.numel() for p in model.parameters()), "vocab": len(tokenizer),
                             "newly_initialized": self.new_params}}
        fs.write_json(run_dir / "metrics.json", metrics)
        if held:
            logger.info("held-out: " + " ".join(f"{k}={v:.4f}" for k, v in held.items() if k != "tokens"))
        logger.info(f"trained {state.tokens_seen:,} tokens in {state.train_seconds:.1f} s "
                    f"({tokens_per_s:,.0f} tokens/s)")
        logger.info(f"model: {run_dir / 'model'}")
        return PretrainResult(run_dir, metrics)


def _check_arch(cfg: PretrainConfig, objective: Any) -> None:
    """Fail before the corpus is read when the from-scratch architecture cannot train the objective."""
    if cfg.arch not in ARCHS:
        raise UserError(f"unknown architecture {cfg.arch!r}; choose one of: {', '.join(ARCHS)}")
    if cfg.size not in SIZES:
        raise UserError(f"unknown model size {cfg.size!r}; choose one of: {', '.join(SIZES)}")
    if (cfg.arch == "bert") != (objective.model_kind == "encoder"):
        fits = "bert" if objective.model_kind == "encoder" else "gpt2, llama"
        raise UserError(f"objective {cfg.objective} does not fit arch {cfg.arch}; use --arch {fits}")


def resolve_train_config(cfg: PretrainConfig, objective: Any, has_new_head: bool) -> Any:
    """Training options with the objective's defaults filled in (lr from scratch vs continued, batch, 1 epoch)."""
    t = cfg.train
    lr = t.lr or (objective.lr_scratch if cfg.from_scratch else objective.lr_continued)
    head_lr = t.head_lr or (objective.head_lr_new if has_new_head else lr)
    # Held-out evaluation every 100 steps streams perplexity during long runs (about 5% of the time).
    return dataclasses.replace(t, lr=lr, head_lr=head_lr, epochs=t.epochs or (None if t.max_steps else 1.0), eval_steps=t.eval_steps or 100,
                               batch_size=t.batch_size or objective.default_batch_size,
                               early_stopping_patience=t.early_stopping_patience or 0)


def _model_and_tokenizer(cfg: PretrainConfig, objective: Any, run_dir: Path,
                         train_docs: list[str]) -> tuple[Any, Any, list[str]]:
    saved = run_dir / "tokenizer"
    if cfg.from_scratch:
        if saved.is_dir():  # a resumed run: the tokenizer it started with
            tokenizer = _load_tokenizer(str(saved))
        elif cfg.train_tokenizer:
            from ..modeling.tokenizers import kind_for_arch, train_tokenizer
            t0 = time.perf_counter()
            kind = kind_for_arch(cfg.arch)
            tokenizer = train_tokenizer(train_docs, kind, cfg.vocab_size)
            logger.info(f"trained a {kind} tokenizer of {len(tokenizer):,} tokens on the training documents "
                        f"in {time.perf_counter() - t0:.1f} s")
        else:
            tokenizer = _load_tokenizer(cfg.tokenizer)
        model = lm_models.build_from_scratch(cfg.arch, cfg.size, tokenizer, cfg.objective)
        n = sum(p.numel() for p in model.parameters())
        logger.info(f"built {type(model).__name__} ({cfg.arch}, {cfg.size}) from scratch: {n / 1e6:.1f}M parameters")
        return model, tokenizer, []
    model, tokenizer = lm_models.load_for_objective(cfg.model, cfg.objective)
    if cfg.tokenizer is not None:
        tokenizer = _load_tokenizer(cfg.tokenizer)
    return model, tokenizer, list(getattr(model, "newly_initialized", []))


def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    check_folder(path, what="tokenizer folder", weights=False)
    with loading(path, "tokenizer"):
        return AutoTokenizer.from_pretrained(path)


def _new_run_dir(cfg: PretrainConfig) -> Path:
    return new_run_dir(cfg.output_dir, "pretrain-" + cfg.objective.replace("+", "-"))
