"""A pretraining run's typed configuration (objective, corpus, model or from-scratch size, tokenizer,
masking, training); the YAML machinery is `config.base`."""
from __future__ import annotations

from dataclasses import dataclass, field

from .base import ConfigFile
from .finetune import TrainConfig


@dataclass
class PretrainConfig(ConfigFile):
    """One pretraining run: objective, corpus, model (existing or from scratch), tokenizer, training."""

    objective: str = field(default="mlm", metadata={"help": "mlm | clm | mlm+nsp"})
    corpus: list[str] = field(default_factory=lambda: ["wiki-summaries"], metadata={"help": "text/JSONL files or folders, or a bundled corpus name"})
    text_column: str | None = field(default=None, metadata={"help": "JSONL/CSV field holding the text (auto-detected if unset)"})
    model: str | None = field(default=None, metadata={"help": "existing model to continue pretraining (bundled name or HF folder)"})
    from_scratch: bool = field(default=False, metadata={"help": "build a randomly initialised model of --arch/--size"})
    arch: str = field(default="bert", metadata={"help": "from-scratch architecture: bert | gpt2 | llama"})
    size: str = field(default="mini", metadata={"help": "from-scratch size: tiny | mini | small"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer folder (default: the model's, or a trained one)"})
    train_tokenizer: bool = field(default=False, metadata={"help": "train a tokenizer on the corpus (WordPiece for bert, byte-level BPE otherwise)"})
    vocab_size: int = field(default=16000, metadata={"help": "vocabulary size of a trained tokenizer"})
    max_length: int | None = field(default=None, metadata={"help": "tokens per training sequence (default per objective)"})
    heldout: float = field(default=0.05, metadata={"help": "share of documents held out for evaluation (seeded)"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N documents of the corpus"})
    mlm_probability: float = field(default=0.15, metadata={"help": "share of non-special tokens selected for MLM"})
    mask_replace: float = field(default=0.8, metadata={"help": "share of selected tokens replaced by [MASK]"})
    random_replace: float = field(default=0.1, metadata={"help": "share of selected tokens replaced by a random token (the rest stay)"})
    whole_word_mask: bool = field(default=False, metadata={"help": "select whole words (WordPiece '##' continuations go with their word)"})
    nsp_not_next: float = field(default=0.5, metadata={"help": "share of NSP pairs whose second sentence comes from another document"})
    # Pretraining tracks the held-out loss and never stops early by default.
    train: TrainConfig = field(default_factory=lambda: TrainConfig(metric="loss", early_stopping_patience=0))
    output_dir: str | None = field(default=None, metadata={"help": "run directory (default runs/<time>-pretrain-<objective>)"})
