"""The training loop: one readable loop on Accelerate.

AdamW (`optim`: no decay on biases and norms, a separate head lr), linear warmup then linear decay,
gradient clipping, gradient accumulation whose loss equals the large-batch loss, evaluation
every epoch or every N steps, early stopping that restores the best weights, and resumable
checkpoints. It does not know which method or task it trains: the model decides what is
trainable and `loss_fn` decides what is scored. Batches are sharded across processes, so the
same loop runs on one CPU, one GPU or several processes under accelerate/torchrun. A loss or
gradient that turns NaN/inf stops the run (`TrainingDiverged`) before it can spoil the weights or
the last checkpoint; checkpoints themselves are written and read by `checkpoint`.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import checkpoint as ckpt
from . import distributed, fsdp, tracking
from ..config.finetune import TrainConfig
from ..core import fs
from ..data.batches import length_grouped_batches
from ..core.errors import TrainingDiverged, UserError
from .optim import make_optimizer, param_groups

# validation metrics where lower is better (every other one is maximised): early stopping, best weights, tune
LOWER_IS_BETTER = ("loss", "perplexity", "mse", "mae", "rmse")

logger = logging.getLogger(__name__)

LOG_EVERY = 10  # optimizer steps between training records in metrics.jsonl


@dataclass
class TrainState:
    """Everything besides tensors that a resumed run needs to continue exactly."""

    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed
    global_step: int = 0
    best_metric: float | None = None
    best_step: int = -1
    best_metrics: dict | None = None  # validation metrics of the best weights
    bad_evals: int = 0
    last_eval_step: int = -1
    metrics_lines: int = 0
    samples_seen: int = 0  # scored items: rows for a sentence task, labelled words or tokens otherwise
    examples_seen: int = 0  # rows of the batches trained on (sentences, windows, sequences)
    tokens_seen: int = 0  # input tokens (attention mask) of the batches trained on
    train_seconds: float = 0.0
    # Sums over the current logging window, so a resumed run logs the same records.
    window_loss: float = 0.0
    window_items: int = 0
    window_correct: int = 0
    stopped_early: bool = False


def total_steps(steps_per_epoch: int, epochs: float | None, max_steps: int | None) -> int:
    """Optimizer steps of a run: the epochs or `max_steps`, whichever ends first (`max_steps` never
    extends training). Without epochs the run trains exactly `max_steps`, cycling through the data."""
    limits = [math.ceil(steps_per_epoch * epochs)] if epochs is not None else []
    limits += [max_steps] if max_steps else []
    if not limits:
        raise UserError("set train.epochs or train.max_steps: the run needs to know when to stop")
    return max(1, min(limits))


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights as whole tensors on the CPU (gathered under FSDP: then a collective)."""
    fsdp.reshard(model)
    return {n: fsdp.full(p.detach()).cpu().clone().contiguous() for n, p in model.named_parameters()
            if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy whole tensors into the model's parameters (into each process's shard under FSDP)."""
    fsdp.reshard(model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in state.items():
            fsdp.put(params[n], t)


class Trainer:
    """Trains `model` on `train_data` (TokenData or FeatureData) and keeps a resumable run directory.

    `cfg` must be fully resolved (lr, epochs, batch size set: see `Method.train_config`).
    """

    def __init__(self, model: nn.Module, train_data: Any, cfg: TrainConfig, run_dir: Path, accelerator: Any,
                 pad_id: int = 0,
                 eval_fn: Callable[[nn.Module], dict[str, float]] | None = None, *,
                 loss_fn: Callable) -> None:
        if eval_fn is not None and cfg.metric is None:
            raise ValueError("TrainConfig.metric must name the validation metric (the task's default_metric)")
        self.cfg, self.run_dir, self.acc = cfg, Path(run_dir), accelerator
        self.data, self.pad_id, self.eval_fn, self.loss_fn = train_data, pad_id, eval_fn, loss_fn
        self.lengths = train_data.lengths()
        micro = math.ceil(len(train_data) / cfg.batch_size)  # the global batch: any process count (distributed)
        self.steps_per_epoch = max(1, math.ceil(micro / cfg.grad_accum))
        self.total_steps = total_steps(self.steps_per_epoch, cfg.epochs, cfg.max_steps)
        self.model = model.to(accelerator.device)
        # train.parallel=fsdp: a sharded copy trains and `fit` gathers its weights back into `model` (fsdp.py)
        self.fsdp = cfg.parallel == "fsdp" and accelerator.num_processes > 1
        self.plain = self.model
        if self.fsdp:
            self.model = fsdp.shard(self.model, "bf16" if accelerator.mixed_precision == "bf16" else "fp32")
        opt = make_optimizer(param_groups(self.model, cfg.lr, cfg.head_lr, cfg.weight_decay, cfg.layer_lr_decay))
        from transformers import get_linear_schedule_with_warmup
        sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup * self.total_steps), self.total_steps)
        if self.fsdp:  # accelerate would wrap the model in DDP: it gets the optimizer and schedule alone
            self.opt, self.sched = accelerator.prepare(opt, sched)
        else:
            self.model, self.opt, self.sched = accelerator.prepare(self.model, opt, sched)
        self.state = TrainState()
        self.best_state: dict[str, torch.Tensor] | None = None
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.higher_is_better = cfg.metric not in LOWER_IS_BETTER
        self._step_tokens = 0
        self._step_examples = 0
        self._saved_step: int | None = None  # the step of the checkpoint on disk, named when a run diverges

    # ---- the loop -------------------------------------------------------------------------
    def fit(self) -> TrainState:
        cfg, st, acc = self.cfg, self.state, self.acc
        bar = None
        if cfg.progress and acc.is_main_process:
            from tqdm.auto import tqdm
            bar = tqdm(total=self.total_steps, initial=st.global_step, desc="training", unit="step", dynamic_ncols=True)
        try:
            return self._fit(bar)
        finally:  # also on Ctrl-C or an error: the bar ends its line, so what is said next starts a line of its own
            if bar is not None:
                bar.close()

    def _fit(self, bar: Any) -> TrainState:
        cfg, st, acc = self.cfg, self.state, self.acc
        stop = st.global_step >= self.total_steps or st.stopped_early
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.model.train()
        while not stop:
            batches = length_grouped_batches(self.lengths, cfg.batch_size, cfg.seed, st.epoch, cfg.group_by_length)
            groups = [batches[i:i + cfg.grad_accum] for i in range(0, len(batches), cfg.grad_accum)]
            for gi in range(st.batch_in_epoch // cfg.grad_accum, len(groups)):
                t0 = time.perf_counter()  # training time counts optimizer steps only, not eval or saving
                loss, items, correct = self._step(groups[gi])
                st.train_seconds += time.perf_counter() - t0
                st.global_step += 1
                st.batch_in_epoch = (gi + 1) * cfg.grad_accum
                st.samples_seen += items
                st.examples_seen += self._step_examples
                st.tokens_seen += self._step_tokens
                st.window_loss += loss
                st.window_items += items
                st.window_correct += correct
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{st.window_loss / st.window_items:.4f}",
                                    acc=f"{st.window_correct / st.window_items:.3f}",
                                    **({"tok/s": f"{st.tokens_seen / max(st.train_seconds, 1e-9):.0f}"}
                                       if st.tokens_seen else {}))
                if st.global_step % LOG_EVERY == 0 or st.global_step == self.total_steps:
                    self._record({"type": "train", "step": st.global_step, "epoch": round(self._epoch_pos(), 4),
                                  "loss": st.window_loss / st.window_items,
                                  "accuracy": st.window_correct / st.window_items,
                                  "lr": self.sched.get_last_lr()[0],
                                  # cumulative, not a rate: a resumed run must log the same records
                                  **({"tokens": st.tokens_seen} if st.tokens_seen else {})})
                    st.window_loss, st.window_items, st.window_correct = 0.0, 0, 0
                if cfg.eval_steps and st.global_step % cfg.eval_steps == 0:
                    stop = self._evaluate()
                if st.global_step >= self.total_steps:
                    stop = True
                if stop:
                    break
                if st.global_step % cfg.checkpoint_steps == 0:
                    self.save_checkpoint()
            else:
                st.epoch, st.batch_in_epoch = st.epoch + 1, 0
                if not cfg.eval_steps:
                    stop = self._evaluate() or stop
                self.save_checkpoint()
        if st.last_eval_step != st.global_step:
            self._evaluate()
        self.save_checkpoint()
        if bar is not None:
            bar.close()  # before restoring the best weights and what follows is said
        self.restore_best()
        if self.fsdp:  # the run saves and scores the plain model it built
            fsdp.gather_into(self.model, self.plain)
            self.model = self.plain
        return st

    def _step(self, group: list[list[int]]) -> tuple[float, int, int]:
        """One optimizer step over `group` micro-batches, scaled so the loss is the big batch's mean.

        Under N processes each takes its rows of every micro-batch (`distributed.split_batch`);
        the gradients DDP averages are then those of the whole batch, as with one process."""
        shares = [distributed.split_batch(b) for b in group]
        batches = [self.data.collate(rows, self.pad_id) for rows, _ in shares]
        weights = [w for _, w in shares]
        tokens = sum(int(b["attention_mask"].sum()) * w for b, w in zip(batches, weights) if "attention_mask" in b)
        # scored items: -100 marks positions without a target (special tokens, later sub-tokens, padding)
        # (class ids only: float labels are regression targets, every one scored)
        local_items = sum(int((b["labels"] != -100).sum() if not b["labels"].is_floating_point() else b["labels"].numel())
                          * w for b, w in zip(batches, weights))
        n = self.acc.num_processes
        n_items = distributed.reduce_sum([local_items], self.acc.device)[0] / n if n > 1 else local_items
        total_loss, total_items, total_correct = 0.0, 0, 0
        for k, (batch, weight) in enumerate(zip(batches, weights)):
            batch = {key: v.to(self.acc.device) for key, v in batch.items()}
            labels = batch.pop("labels")
            sync = k == len(batches) - 1
            if self.fsdp:
                fsdp.gradient_sync(self.model, sync)
            with contextlib.nullcontext() if sync or self.fsdp else self.acc.no_sync(self.model):
                out = self.model(**batch)
                loss_sum, items, correct = self.loss_fn(out, {**batch, "labels": labels})
                self.acc.backward(loss_sum * weight / max(n_items, 1e-12))
            if weight:
                total_loss += float(loss_sum.detach())
                total_items += items
                total_correct += correct
        examples = sum(len(b) for b in group)  # the global batch's examples, on every process
        if n > 1:  # the whole batch's numbers; and every process must stop together, not only the one with a NaN
            total_loss, total_items, total_correct, tokens = distributed.reduce_sum(
                [total_loss, total_items, total_correct, tokens], self.acc.device)
            total_items, total_correct, tokens = int(total_items), int(total_correct), int(tokens)
        self._step_tokens = int(tokens)
        self._step_examples = examples
        step = self.state.global_step + 1
        if not math.isfinite(total_loss):
            raise self._diverged(step, "the training loss", total_loss)
        norm = self._grad_norm()
        if norm is not None and not math.isfinite(norm):
            raise self._diverged(step, "the gradient norm", norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return total_loss, total_items, total_correct

    def _grad_norm(self) -> float | None:
        """The gradient norm (after clipping it, when clipping is on); None where it is not checked.

        Under fp16 loss scaling an overflowing gradient is routine: the scaler skips that step and
        lowers the scale, so only the loss is checked there.
        """
        clip = self.cfg.max_grad_norm > 0
        norm = self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm) if clip else None
        if self.acc.scaler is not None or (clip and norm is None):  # DeepSpeed returns no norm
            return None
        if not clip:
            grads = [fsdp.full(p.grad.detach()).float().norm() for p in self.model.parameters() if p.grad is not None]
            norm = torch.stack(grads).norm() if grads else torch.zeros(())  # torch < 2.6 has no get_total_norm
        return float(fsdp.full(norm))

    def _diverged(self, step: int, what: str, value: Any) -> TrainingDiverged:
        """The one-line error of a run whose loss, gradients or weights stopped being finite."""
        lr = self.cfg.lr
        kept = (f"there is no checkpoint under {self.ckpt_dir} yet: start again" if self._saved_step is None else
                f"the last checkpoint with finite weights (step {self._saved_step}) under {self.ckpt_dir} is kept: "
                f"resume the run")
        return TrainingDiverged(f"training diverged at step {step}: {what} is {value} (learning rate {lr:g} too "
                                f"high for this model/method, or fp16 overflow / bad data); {kept}, e.g. with "
                                f"a lower learning rate (train.lr={lr / 4:g})")

    def _epoch_pos(self) -> float:
        return self.state.global_step / self.steps_per_epoch

    # ---- evaluation and early stopping -----------------------------------------------------
    def _evaluate(self) -> bool:
        """Validate, track the best weights; True when early stopping says stop."""
        st = self.state
        st.last_eval_step = st.global_step
        if self.eval_fn is None:
            return False
        self.model.eval()
        # each process scores its share of the rows and metrics see them all; a sharded model's forward is a
        # collective, so under FSDP every process scores every row (the same calls in the same order)
        with contextlib.nullcontext() if self.fsdp else distributed.sharded():
            metrics = self.eval_fn(self.acc.unwrap_model(self.model))
        self.model.train()
        self._record({"type": "eval", "split": "validation", "step": st.global_step,
                      "epoch": round(self._epoch_pos(), 4), **metrics})
        if self.cfg.metric not in metrics:
            known = ", ".join(k for k, v in metrics.items() if isinstance(v, float))
            raise UserError(f"train.metric={self.cfg.metric!r} is not a validation metric of this run ({known})")
        value = metrics[self.cfg.metric]
        better = st.best_metric is None or (value > st.best_metric if self.higher_is_better else value < st.best_metric)
        logger.info(f"step {st.global_step} (epoch {self._epoch_pos():.2f}): validation "
                    + " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
                    + ("  * best" if better else ""))
        if better:
            st.best_metric, st.best_step, st.bad_evals = value, st.global_step, 0
            st.best_metrics = metrics
            self.best_state = trainable_state(self.acc.unwrap_model(self.model))
            if self.acc.is_main_process:
                ckpt.save_best(self.ckpt_dir, self.best_state, st.global_step)
            return False
        st.bad_evals += 1
        patience = self.cfg.early_stopping_patience
        if patience and st.bad_evals >= patience:
            st.stopped_early = True
            logger.info(f"early stopping: no improvement in {self.cfg.metric} for {patience} evaluations")
            return True
        return False

    def restore_best(self) -> None:
        if self.best_state is not None:
            load_trainable_state(self.acc.unwrap_model(self.model), self.best_state)
            logger.info(f"restored the best weights (step {self.state.best_step}, "
                        f"{self.cfg.metric}={self.state.best_metric:.4f})")

    def _record(self, rec: dict[str, Any]) -> None:
        if not self.acc.is_main_process:
            return
        fs.append_line(self.metrics_path, fs.dumps(rec))  # NaN/inf become null: the file stays strict JSON
        self.state.metrics_lines += 1
        tracking.log(self.acc, rec, rec["step"])  # the same record to the run's trackers (train.report_to)

    # ---- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Write checkpoints/last (see `checkpoint.save`): weights, optimizer, scheduler, RNG, state.

        Weights that are no longer finite are never saved: they would replace the last good checkpoint.
        """
        model = self.acc.unwrap_model(self.model)
        # Under FSDP every process gathers (a collective); otherwise rank 0 alone copies what it writes, and
        # each process checks its own identical replica.
        weights = trainable_state(model) if self.fsdp or self.acc.is_main_process else None
        checked = weights.items() if weights is not None else ((n, p) for n, p in model.named_parameters()
                                                                 if p.requires_grad)
        if (bad := next((n for n, t in checked if not bool(torch.isfinite(t).all())), None)) is not None:
            raise self._diverged(self.state.global_step, f"the weight {bad}", "not finite")
        optimizer = {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()}
        if self.fsdp:  # whole tensors, so any process count (or none) can resume
            optimizer = fsdp.full_tree(optimizer)
        rng = ckpt.rng_state()
        if self.acc.num_processes > 1:  # each process's generators: how much dropout draws depends on its rows'
            # shapes, so rank 1 resumed with rank 0's generators ends elsewhere (measured: benchmarks/distributed.py)
            rng = {**rng, "ranks": distributed.gather_objects(rng)}
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            ckpt.save(self.ckpt_dir, weights, optimizer=optimizer, rng=rng, state=asdict(self.state),
                      records=self.metrics_path)
        self._saved_step = self.state.global_step

    def load_checkpoint(self) -> bool:
        """Continue from the last complete checkpoint; True when one was loaded.

        Without one the run starts over, so the metric records and best weights of the attempt
        before are dropped (they would be written again). The learning rates of `cfg` win over the
        checkpoint's, so a diverged run can resume with a lower `train.lr`.
        """
        found = ckpt.load(self.ckpt_dir)
        self.acc.wait_for_everyone()  # every process has read before the main one renames or removes
        if self.acc.is_main_process:
            ckpt.settle(self.ckpt_dir, found)
            if found is None and self.metrics_path.is_file():
                fs.write_text(self.metrics_path, "")
        if found is None:
            return False
        base_lrs = list(self._scheduler().base_lrs)  # of `cfg`, before the checkpoint's replace them
        try:
            load_trainable_state(self.acc.unwrap_model(self.model), found.weights)
            self.opt.load_state_dict(found.optimizer["optimizer"])
            if self.fsdp:
                fsdp.shard_optimizer_state(self.opt)
            self.sched.load_state_dict(found.optimizer["scheduler"])
            state = TrainState(**found.state)
        except UserError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"checkpoint {found.folder} does not fit this run: {ckpt.one_line(e)}") from None
        ranks = found.rng.get("ranks") if isinstance(found.rng, dict) else None
        own = ranks[distributed.rank()] if isinstance(ranks, list) and distributed.rank() < len(ranks) else found.rng
        ckpt.restore_rng(own, found.folder / "rng.json")  # another process count: rank 0's where none was saved
        self._use_config_lrs(base_lrs)
        self.state = state
        self.best_state = None
        if state.best_step >= 0:
            self.best_state = ckpt.load_best(self.ckpt_dir, state.best_step)
            if self.best_state is None and state.best_step == state.global_step:
                self.best_state = found.weights  # evaluated at this very step: the same weights
            if self.best_state is None:  # a later evaluation replaced them before the run was killed
                logger.info(f"note: {self.ckpt_dir / ckpt.BEST} does not hold the best weights "
                            f"(step {state.best_step})")
        if self.acc.is_main_process:
            _truncate_lines(self.metrics_path, state.metrics_lines)
        self._saved_step = state.global_step
        return True

    def _scheduler(self) -> Any:
        return getattr(self.sched, "scheduler", self.sched)  # under the AcceleratedScheduler

    def _use_config_lrs(self, base_lrs: list[float]) -> None:
        """Put back the configured learning rates when they differ from the checkpoint's."""
        sched = self._scheduler()
        if list(sched.base_lrs) == base_lrs:
            return  # the same run continues: keep the restored values bit for bit
        sched.base_lrs = base_lrs
        lrs = [base * fn(sched.last_epoch) for base, fn in zip(base_lrs, sched.lr_lambdas)]
        for group, base, lr in zip(self.opt.param_groups, base_lrs, lrs):
            group["initial_lr"], group["lr"] = base, lr
        sched._last_lr = lrs
        logger.info(f"learning rates changed on resume: now {', '.join(f'{b:g}' for b in base_lrs)}")


def _truncate_lines(path: Path, n: int) -> None:
    """Drop metric records written after the checkpoint a run resumes from."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if len(lines) > n:
        fs.write_text(path, "".join(lines[:n]))
