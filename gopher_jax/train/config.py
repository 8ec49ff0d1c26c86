"""`TrainConfig` (gin name `train`) and `OptimizerConfig` (gin name `optimizer`).

The gin surface scripts rely on: train.steps (or train.tokens), train.batch_size, train.seq_len,
train.log_every, train.eval_every, train.checkpoint_every.
"""
from __future__ import annotations

import dataclasses

import gin

SCHEDULES = ("gopher", "chinchilla", "constant")
OPTIMIZERS = ("adam", "adamw")


@gin.configurable("train")
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What to train on and for how long."""

    # The run's length: train.steps, or train.tokens (steps derived from batch x seq_len and the ramp,
    # token_budget.py; then train.steps holds the derived count). Setting both to different counts is an error.
    steps: int | None = None  # optimizer updates in the whole run (also the schedule's length); default 200
    tokens: int = 0  # training tokens (0 = sized by train.steps)
    batch_size: int = 16  # global batch, in sequences (the first stage's when train.batch_ramp is set)
    batch_ramp: tuple = ()  # ((tokens_seen, new_batch_size), ...): the batch changes once that many tokens trained
    seq_len: int = 256  # tokens per sequence (packed documents)
    microbatches: int = 1  # gradient accumulation: batch_size is split into this many, inside the step
    seed: int = 0  # parameter init and data order
    log_every: int = 10  # steps between metrics.jsonl / TensorBoard / progress-bar updates
    eval_every: int = 100  # steps between held-out loss evaluations (0 = only at the end)
    eval_batches: int = 0  # held-out batches per evaluation (0 = the whole held-out split)
    checkpoint_every: int = 100  # steps between checkpoints (always one at the end)
    keep_checkpoints: int = 3  # newest checkpoints kept on disk
    # Multi-host: hosts compare "SIGTERM received?" every this many steps (an all-gather of one flag that
    # waits for the step in flight); all stop together at the first comparison after any host's signal.
    # 1 = every step (the ~30 s Cloud TPU grace period allows little lag); raise it when steps are ~ms.
    stop_check_every: int = 1
    train_task: str = ""  # seqio task/mixture to train on ("" = the embedded default corpus)
    eval_task: str = ""  # seqio task for held-out loss ("" = the embedded held-out split)
    tokenizer: str = ""  # SentencePiece .model path ("" = train/cache one on the embedded corpus)
    # Loss spikes / non-finite values (gopher_jax/train/spikes.py, docs/reliability.md):
    spike_policy: str = "none"  # "none" | "skip" (drop the update) | "rewind" (also restore the last checkpoint)
    spike_threshold: float = 2.0  # a loss above this x the running average of accepted losses is a spike
    spike_ema_decay: float = 0.99  # running average: ema = decay * ema + (1 - decay) * loss
    spike_warmup_steps: int = 100  # accepted updates before spikes are judged (non-finite always is)
    max_skipped_updates: int = 20  # "skip": stop the run once more updates than this were dropped
    max_rewinds: int = 3  # "rewind": stop the run after this many rewinds

    def __post_init__(self):
        from gopher_jax.train import token_budget
        token_budget.stages(batch_size=max(self.batch_size, 1), seq_len=1, batch_ramp=self.batch_ramp, steps=1)
        if self.tokens < 0:
            raise ValueError(f"train.tokens={self.tokens} must be >= 0 (0 = sized by train.steps)")
        if self.tokens > 0 and self.batch_size > 0 and self.seq_len > 0:
            derived = token_budget.steps_for_tokens(self.tokens, self.batch_size, self.seq_len, self.batch_ramp)
            if self.steps not in (None, derived):
                raise ValueError(f"train.steps={self.steps} and train.tokens={self.tokens:,} (= {derived} steps at "
                                 f"this batch and seq_len) both size the run; set train.tokens=0 to use train.steps, "
                                 f"or drop the train.steps binding")
            object.__setattr__(self, "steps", derived)
        elif self.steps is None:
            object.__setattr__(self, "steps", 200)
        object.__setattr__(self, "batch_ramp", tuple(tuple(int(v) for v in e) for e in self.batch_ramp))
        for name in ("steps", "batch_size", "seq_len", "microbatches", "log_every", "checkpoint_every",
                     "stop_check_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"train.{name}={getattr(self, name)} must be positive")
        for name, batch in (("train.batch_size", self.batch_size), *(("train.batch_ramp batch", b)
                                                                    for _, b in self.batch_ramp)):
            if batch % self.microbatches:
                raise ValueError(f"{name}={batch} is not divisible by train.microbatches={self.microbatches}; "
                                 f"pick a divisor of every batch size")
        from gopher_jax.train.spikes import POLICIES
        if self.spike_policy not in POLICIES:
            raise ValueError(f"train.spike_policy={self.spike_policy!r} is not one of {POLICIES}")
        if not self.spike_threshold > 1.0:
            raise ValueError(f"train.spike_threshold={self.spike_threshold} must exceed 1 (e.g. 2.0): "
                             f"it multiplies the running-average loss")
        if not 0.0 <= self.spike_ema_decay < 1.0:
            raise ValueError(f"train.spike_ema_decay={self.spike_ema_decay} must be in [0, 1), e.g. 0.99")
        for name in ("spike_warmup_steps", "max_skipped_updates", "max_rewinds"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name}={getattr(self, name)} must be >= 0")

    def stages(self):
        """Returns the run's constant-batch stages (token_budget.BatchStage list)."""
        from gopher_jax.train import token_budget
        return token_budget.stages(batch_size=self.batch_size, seq_len=self.seq_len, batch_ramp=self.batch_ramp,
                                   tokens=self.tokens, steps=self.steps)


@gin.configurable("optimizer")
@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Adam(W), learning-rate schedule, clipping and weight decay (Gopher §3, Chinchilla §3/App. A)."""

    name: str = "adamw"  # "adam" (Gopher) | "adamw" (Chinchilla)
    peak_learning_rate: float = 6e-4  # Gopher Table 1 max LR for the small models
    warmup_steps: int = 1500  # Gopher: linear warmup over 1,500 steps (clipped to the run length)
    schedule: str = "gopher"  # "gopher": cosine to peak/decay_factor over the run; "chinchilla": alias of it
    decay_factor: float = 10.0  # Gopher: cosine decay by 10x
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1  # AdamW's decoupled decay (ignored for "adam")
    decay_embeddings_and_norms: bool = False  # also decay 1-D params and embedding tables
    clip_norm: float = 1.0  # global-norm gradient clipping (Gopher: 1.0; 0.25 for 7.1B and 280B); 0 = off
    z_loss: float = 0.0  # coefficient of log(Z)^2 on the logits (PaLM uses 1e-4)

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer.name={self.name!r} is not one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optimizer.schedule={self.schedule!r} is not one of {SCHEDULES}")
        if self.peak_learning_rate <= 0:
            raise ValueError(f"optimizer.peak_learning_rate={self.peak_learning_rate} must be positive")
