"""Training configuration: one frozen, flat dataclass and its validation.

``Config()`` is the default setting (``configs/default.py`` returns it unchanged): 1 agent, 2
items, U[0, 1] values, the paper's certifiable "architecture 2", with hyperparameters tuned for a
2-core CPU (see ``configs/default.py`` for why each differs from the paper). Config files
(``configs/NAME.py``, each a ``get_config() -> Config``) and ``field=value`` overrides are read by
:mod:`jaxauction.config_io`; ``validate(cfg)`` rejects inconsistent settings. Every error is a
:class:`ConfigError` whose message names the offending field.

The training objective these fields parameterize (see ``lagrangian.py`` and ``training.py``)::

    L = -rev + sum_i lam_i rgt_i + rho/2 sum_i rgt_i^2              (regret, augmented Lagrangian)
          + sum_i mu_i ir_i + rho_ir/2 sum_i ir_i^2                   (IR; ir_i = mean_b irv_bi^ir_power)
          + stability_weight * ReLU-stability(IBP boxes)              (Xiao et al. 2019)
          + distill_weight * (MSE(a, a_teacher) + MSE(p, p_teacher))  (distillation)
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Optional

from jaxauction.baselines import BASELINES
from jaxauction.mechanism import ACTIVATIONS, ALLOCATIONS, PAYMENTS, TOWERS, MechanismSpec
from jaxauction.priors import UniformPrior

REPO = Path(__file__).resolve().parents[1]
PAYMENT_INITS = ("glorot", "nonneg")  # Config.payment_init
BIAS_INITS = ("zeros", "uniform")  # Config.bias_init
STABILITY_LOSSES = ("xiao", "margin")  # Config.stability_loss (jaxauction.bounds.STABILITY_LOSSES)


class ConfigError(ValueError):
    """A config cannot be loaded, an override is malformed, or a setting is invalid."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that determines a training run (a run is reproducible from this and the code).

    The defaults are the one default setting of the project (``configs/default.py`` returns
    ``Config()``, and explains why its tuned values differ from the paper's, noted per field below).

    Setting:
      name: config name (set by ``config_io.load_config`` to the file's stem; names the default run dir).
      n_agents: N, number of bidders.
      n_items: M, number of items (additive valuations).
      prior_low: lower value bound per item (length M), or one number for every item.
      prior_high: upper value bound per item (length M), or one number for every item.
        Every agent draws item j's value from ``U[prior_low[j], prior_high[j]]``; the same box is
        the misreport support (PGD projection, regularizer boxes, certification).

    Architecture (see ``mechanism.py``):
      hidden: trunk widths (of each tower when towers="separate"); the paper's 1x2 nets are
        (128, 128), 2x2 nets (128, 128, 128); RegretNet's (100, 100).
      activation: "relu" (certifiable by the MIP and the planar method) or "tanh" (RegretNet's
        original nets; no ReLU-stability regularizer then: stability_weight must be 0).
      towers: "shared" (one trunk feeds both heads) or "separate" (an allocation tower and a
        payment tower, as RegretNet).
      allocation: "softmax" or "sparsemax".
      payment: "fractional" (hard sigmoid, IR by construction), "fractional_sigmoid" (logistic,
        the RegretNet teacher) or "free" (``clip(q, 0, payment_max)``; needs the IR penalty).
      payment_max: upper clip of free payments; None means ``sum_j max_i prior_high[i, j]``
        (= n_items for U[0, 1] values, as in the paper).
      payment_init: "glorot" (every weight Glorot-uniform, biases 0, as RegretNet) or "nonneg"
        (the payment head's weights start at |Glorot|, so every payment logit ``q_i = h . w_i`` is
        >= 0 at initialization since the trunk output h is >= 0 after its ReLU). With "glorot" a
        free payment can start clipped at 0 on *every* profile for some agent, and the clip then
        passes no gradient: that agent never pays (seed 0 of the 2x2 student lost agent 2 so).
      bias_init: "zeros" (RegretNet's TensorFlow code) or "uniform": every bias ~ U(-1/sqrt(fan_in),
        1/sqrt(fan_in)), PyTorch's ``nn.Linear`` default, which the certification paper's code keeps
        (its ``glorot_init`` redraws weights only). With zero biases every first-layer hyperplane
        ``w . x = 0`` passes through the corner b = 0 of the bid box, so a neuron with mixed-sign
        weights starts unstable on every agent's box.

    Data and optimizer:
      seed: seeds parameter init, the training/eval sets and the per-epoch shuffles.
      num_examples: size of the fixed training set (RegretNet: 600000), reshuffled every epoch;
        the last partial batch of an epoch is dropped.
      batch_size: profiles per step.
      steps: total optimizer steps (epochs = steps * batch_size / num_examples).
      lr: Adam learning rate of the mechanism parameters (paper: 0.01 at batch 20000).
      lr_decay_to: multiply lr by a cosine schedule from 1 down to this factor over ``steps``
        (1.0 = constant lr, as in the paper).
      init_from: start the parameters from this mechanism (a run or checkpoint directory of the
        same architecture) instead of a fresh initialization: fine-tuning, e.g. a net distilled
        from item-wise Myerson then trained on a regret budget. "" = fresh.

    Misreports (inner maximization, ``misreport.pgd``):
      misreport_steps: projected gradient-ascent steps per training step (paper: 25).
      misreport_lr: step size of that ascent (paper: 0.02).
      warm_start: start each profile's ascent at the misreports found the last time the same
        training profile was visited (kept for the whole training set), instead of at the truthful
        bids (the paper's choice).
      misreport_restarts: R extra searches per training profile and step, started at random
        points biased to the support's corners and faces (``misreport.restart_inits``); each
        (profile, agent) keeps the best of the 1 + R results (also as its next warm start).
        0 = the paper's single search. Costs about (1 + R) times the misreport time.

    Augmented Lagrangian for regret (``lagrangian.py``):
      lambda_init: initial multiplier of every agent's regret (paper code: 5.0).
      rho: initial quadratic penalty weight (paper: 1.0; 0.7 for its 1x2 net).
      rho_increment: added to rho every ``rho_every`` steps (paper: 0.0 for regret).
      rho_every: steps between rho increments.
      lagrange_every: steps between multiplier updates ``lam_i += rho * rgt_i`` (paper: 6).
      regret_budget: R >= 0, the mean regret per agent the run may spend: the constraint becomes
        ``rgt_i <= R`` (``lam_i <- max(0, lam_i + rho (rgt_i - R))``, penalty on the excess only;
        ``lagrangian.py``). 0 = RegretNet's ``rgt_i = 0``.

    IR penalty (only meaningful for free payments; fractional payments are IR by construction):
      ir_penalty: include the IR term in the loss (required when payment == "free").
      ir_power: ir_i = mean_b max(0, -u_bi)^ir_power (paper: 2).
      mu_init: initial IR multiplier (paper code: 20.0).
      rho_ir: initial IR quadratic weight (paper: 1.0).
      rho_ir_increment: added to rho_ir every ``rho_ir_every`` steps (paper: 5.0).
      rho_ir_every: steps between rho_ir increments.
      ir_every: steps between IR multiplier updates ``mu_i += rho_ir * ir_i``.

    Regularizers:
      stability_weight: weight of the ReLU-stability loss (paper: 1/400; 0 disables it). Its boxes
        let one agent's bids range over its whole support with the others fixed at the sampled
        profile, one box per (profile, agent).
      stability_points: profiles of the batch used for those boxes (0 = the whole batch).
      stability_loss: "xiao" (the paper's ``-tanh(1 + l u)`` per neuron) or "margin" (a scale-free
        soft count of unstable neurons, ``max(0, 1 - |c| / r)`` with centre c and radius r of the
        IBP bounds; see ``bounds.relu_margin_loss``).
      teacher: mechanism to distill from (run dir, checkpoint dir or reference NAME.npz; relative
        paths resolve against the working directory, then the repository), or the name of a
        strategyproof baseline of ``jaxauction.baselines`` ("myerson", "bundle", "softmyerson") built for this
        config's prior; "" = no distillation.
      distill_weight: weight of ``MSE(alloc, teacher alloc) + MSE(pay, teacher pay)`` (paper: 1);
        0 with a teacher: the teacher is used only for ``distill_pretrain_steps``.
      distill_pretrain_steps: steps of pure distillation towards the teacher (no misreports, no
        revenue, no regularizer; ``jaxauction.pretrain``) from the fresh initialization, before
        training starts. 0 = none.

    Logging, evaluation, checkpoints:
      log_every: steps between metrics.jsonl lines (and progress-bar refreshes).
      eval_every: steps between evaluations on the held-out set (0 = only at the end).
      eval_points: held-out profiles for periodic evaluations.
      eval_misreport_steps: PGD steps of periodic evaluations.
      checkpoint_every: steps between saves of the mechanism and the resumable training state.
      final_eval_points: held-out profiles of the final evaluation (final_eval.json).
      final_eval_steps: PGD steps of the final evaluation (paper: 1000).
      max_seconds: wall-clock training budget; when spent, training stops early (after saving)
        and the final evaluation runs as usual. 0 = no budget; ``--resume`` can continue later.
    """

    # setting
    name: str = "default"
    n_agents: int = 1
    n_items: int = 2
    prior_low: tuple[float, ...] = (0.0,)
    prior_high: tuple[float, ...] = (1.0,)
    # architecture
    hidden: tuple[int, ...] = (128, 128)
    activation: str = "relu"
    towers: str = "shared"
    allocation: str = "sparsemax"
    payment: str = "fractional"
    payment_max: Optional[float] = None
    payment_init: str = "glorot"
    bias_init: str = "zeros"
    # data and optimizer
    seed: int = 0
    num_examples: int = 640000
    batch_size: int = 4096
    steps: int = 1000
    lr: float = 0.001
    lr_decay_to: float = 0.1
    init_from: str = ""
    # misreports
    misreport_steps: int = 25
    misreport_lr: float = 0.02
    warm_start: bool = True
    misreport_restarts: int = 2
    # augmented Lagrangian (regret)
    lambda_init: float = 5.0
    rho: float = 30.0
    rho_increment: float = 0.0
    rho_every: int = 5
    lagrange_every: int = 6
    regret_budget: float = 0.0
    # IR penalty
    ir_penalty: bool = False
    ir_power: float = 2.0
    mu_init: float = 20.0
    rho_ir: float = 1.0
    rho_ir_increment: float = 5.0
    rho_ir_every: int = 5
    ir_every: int = 6
    # regularizers
    stability_weight: float = 0.0025
    stability_points: int = 0
    stability_loss: str = "xiao"
    teacher: str = ""
    distill_weight: float = 1.0
    distill_pretrain_steps: int = 0
    # logging, evaluation, checkpoints
    log_every: int = 50
    eval_every: int = 250
    eval_points: int = 1000
    eval_misreport_steps: int = 1000
    checkpoint_every: int = 250
    final_eval_points: int = 10000
    final_eval_steps: int = 1000
    max_seconds: float = 0.0

    # ---- derived values -------------------------------------------------------------------
    def prior(self) -> UniformPrior:
        """The valuation prior: ``U[prior_low[j], prior_high[j]]`` for every agent and item j."""
        lows, highs = _per_item(self, "prior_low"), _per_item(self, "prior_high")
        row_lo, row_hi = tuple(lows), tuple(highs)
        return UniformPrior(tuple(row_lo for _ in range(self.n_agents)), tuple(row_hi for _ in range(self.n_agents)))

    def spec(self) -> MechanismSpec:
        """The mechanism architecture."""
        pmax = self.payment_max
        if pmax is None:
            pmax = float(sum(_per_item(self, "prior_high")))
        return MechanismSpec(self.n_agents, self.n_items, tuple(self.hidden), self.allocation, self.payment, float(pmax),
                             activation=self.activation, towers=self.towers)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`.

        A field absent from ``d`` (a ``config.json`` written before the field existed) takes the
        value such a run was trained with, :data:`ABSENT_FIELD_VALUES`, else its default.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}")
        hints = typing.get_type_hints(cls)
        kw = {k: v for k, v in ABSENT_FIELD_VALUES.items() if k not in d}
        for k, v in d.items():
            kw[k] = tuple(v) if is_tuple_type(hints[k]) and v is not None else v
        return cls(**kw)


# Fields added after the first runs were written, with the behaviour of the code before each
# existed: what a config.json without the field was trained with (Config.from_dict).
ABSENT_FIELD_VALUES = {"misreport_restarts": 0, "payment_init": "glorot", "bias_init": "zeros",
                       "stability_loss": "xiao"}


def _per_item(cfg: Config, name: str) -> list[float]:
    vals = [float(x) for x in getattr(cfg, name)]
    if len(vals) == 1:
        return vals * cfg.n_items
    if len(vals) != cfg.n_items:
        raise ConfigError(f"{name}: needs 1 or n_items={cfg.n_items} values, got {len(vals)}")
    return vals


# ---- field types ---------------------------------------------------------------------------

def is_tuple_type(tp) -> bool:
    """``tuple[X, ...]``?"""
    return typing.get_origin(tp) is tuple


def optional_inner(tp):
    """``Optional[X]`` -> X, else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


# ---- validation ----------------------------------------------------------------------------

def is_baseline_teacher(teacher: str) -> bool:
    """Does ``teacher`` name a strategyproof baseline (``jaxauction.baselines.BASELINES``) rather than a path?"""
    return teacher in BASELINES and not Path(teacher).exists()


def resolve_teacher(teacher: str) -> Path:
    """A teacher (or ``init_from``) path: as given if it exists (relative to the cwd), else relative to the repo."""
    p = Path(teacher)
    if p.exists() or p.is_absolute():
        return p
    return REPO / p


def validate(cfg: Config, check_files: bool = True) -> Config:
    """Raise :class:`ConfigError` naming the field if ``cfg`` is inconsistent; return ``cfg``.

    Checks types, positive sizes, known options, the prior box, and combinations: free payments
    need the IR penalty; distillation needs a teacher (and ``check_files`` checks it exists);
    a teacher with ``distill_weight == 0`` is rejected as a likely mistake.
    """
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        v, tp = getattr(cfg, f.name), hints[f.name]
        inner = optional_inner(tp)
        if inner is not None:
            if v is None:
                continue
            tp = inner
        if is_tuple_type(tp):
            elem = typing.get_args(tp)[0]
            ok = isinstance(v, tuple) and len(v) > 0 and all(
                isinstance(x, elem) or (elem is float and isinstance(x, int) and not isinstance(x, bool)) for x in v)
            if not ok:
                raise ConfigError(f"{f.name}: expected a non-empty tuple of {elem.__name__}, got {v!r}")
        elif tp is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{f.name}: expected a float, got {v!r}")
        elif not isinstance(v, tp) or (tp is int and isinstance(v, bool)):
            raise ConfigError(f"{f.name}: expected {tp.__name__}, got {v!r}")

    def positive(*names):
        for n in names:
            if not getattr(cfg, n) > 0:  # NaN too
                raise ConfigError(f"{n}: must be positive, got {getattr(cfg, n)}")

    def nonneg(*names):
        for n in names:
            if not getattr(cfg, n) >= 0:  # NaN too
                raise ConfigError(f"{n}: must be >= 0, got {getattr(cfg, n)}")

    positive("n_agents", "n_items", "num_examples", "batch_size", "steps", "lr", "misreport_lr",
             "rho_every", "lagrange_every", "rho_ir_every", "ir_every", "log_every", "eval_points",
             "checkpoint_every", "final_eval_points", "ir_power")
    nonneg("misreport_steps", "misreport_restarts", "lambda_init", "rho", "rho_increment", "mu_init", "rho_ir", "rho_ir_increment",
           "stability_weight", "stability_points", "distill_weight", "regret_budget", "distill_pretrain_steps", "eval_every", "eval_misreport_steps",
           "final_eval_steps", "max_seconds")
    if any(h <= 0 for h in cfg.hidden):
        raise ConfigError(f"hidden: widths must be positive, got {cfg.hidden}")
    if cfg.activation not in ACTIVATIONS:
        raise ConfigError(f"activation: must be one of {ACTIVATIONS}, got {cfg.activation!r}")
    if cfg.towers not in TOWERS:
        raise ConfigError(f"towers: must be one of {TOWERS}, got {cfg.towers!r}")
    if cfg.activation != "relu" and cfg.stability_weight > 0:
        raise ConfigError(f"stability_weight: the ReLU-stability regularizer ({cfg.stability_loss!r}) needs "
                          f"activation='relu', got activation={cfg.activation!r}; set stability_weight=0")
    if cfg.allocation not in ALLOCATIONS:
        raise ConfigError(f"allocation: must be one of {ALLOCATIONS}, got {cfg.allocation!r}")
    if cfg.payment not in PAYMENTS:
        raise ConfigError(f"payment: must be one of {PAYMENTS}, got {cfg.payment!r}")
    if cfg.payment_init not in PAYMENT_INITS:
        raise ConfigError(f"payment_init: must be one of {PAYMENT_INITS}, got {cfg.payment_init!r}")
    if cfg.stability_loss not in STABILITY_LOSSES:
        raise ConfigError(f"stability_loss: must be one of {STABILITY_LOSSES}, got {cfg.stability_loss!r}")
    if cfg.bias_init not in BIAS_INITS:
        raise ConfigError(f"bias_init: must be one of {BIAS_INITS}, got {cfg.bias_init!r}")
    if cfg.payment_max is not None and cfg.payment_max <= 0:
        raise ConfigError(f"payment_max: must be positive or None, got {cfg.payment_max}")
    if not 0.0 <= cfg.lr_decay_to <= 1.0:
        raise ConfigError(f"lr_decay_to: must be in [0, 1], got {cfg.lr_decay_to}")
    lows, highs = _per_item(cfg, "prior_low"), _per_item(cfg, "prior_high")
    for j, (lo, hi) in enumerate(zip(lows, highs)):
        if not hi > lo:
            raise ConfigError(f"prior_high: item {j} has high {hi} <= low {lo}")
    if cfg.batch_size > cfg.num_examples:
        raise ConfigError(f"batch_size: {cfg.batch_size} exceeds num_examples={cfg.num_examples}")
    if cfg.stability_points > cfg.batch_size:
        raise ConfigError(f"stability_points: {cfg.stability_points} exceeds batch_size={cfg.batch_size}")
    if cfg.payment == "free" and not cfg.ir_penalty:
        raise ConfigError("ir_penalty: free payments are not IR by construction; set ir_penalty=true")
    if cfg.teacher and cfg.distill_weight == 0 and not cfg.distill_pretrain_steps:
        raise ConfigError(f"distill_weight: is 0 but teacher={cfg.teacher!r} is set; set distill_weight > 0, "
                          f"distill_pretrain_steps > 0 or teacher=''")
    if cfg.distill_pretrain_steps and not cfg.teacher:
        raise ConfigError("distill_pretrain_steps: needs a teacher (teacher='myerson', or a run directory)")
    if cfg.distill_pretrain_steps and cfg.init_from:
        raise ConfigError("distill_pretrain_steps: starts from a fresh initialization, but init_from is set; "
                          "use one of them")
    if cfg.teacher and check_files and not is_baseline_teacher(cfg.teacher) and not resolve_teacher(cfg.teacher).exists():
        raise ConfigError(f"teacher: {cfg.teacher} does not exist (train the teacher run first; "
                          f"the shipped *_distill/NxM configs name their *_teacher run in runs/; a "
                          f"baseline teacher is one of {', '.join(BASELINES)})")
    if cfg.init_from and check_files and not resolve_teacher(cfg.init_from).exists():
        raise ConfigError(f"init_from: {cfg.init_from} does not exist (a run or checkpoint directory)")
    return cfg

