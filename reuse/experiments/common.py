"""Pieces every experiment shares: the specs of one condition and scoring swapped models."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import Profile
from ..group import evaluate_states
from ..metrics import PRIMARY, chance_level, evaluate, reuse_score
from ..models import conv_layer_names
from ..scoring import score_states
from ..surgery import reestimate_bn, swap_state
from ..train import Runner, RunSpec, TrainedRun

DIFFERENT_INIT_OFFSET = 1000  # init seed of the different-initialisation control: seed + this


@dataclass(frozen=True)
class Condition:
    """One architecture x task x pair x seed cell of an experiment."""

    architecture: str
    task: str
    pair: str
    seed: int
    shift: float = 0.0

    def factors(self) -> dict:
        return {"architecture": self.architecture, "task": self.task, "pair": self.pair,
                "seed": self.seed}


def specs(runner: Runner, profile: Profile, c: Condition) -> dict[str, RunSpec]:
    """theta_S, theta_T (same init seed) and theta_T' (different init) of a condition.

    The seed fixes initialisation, batch order and which samples are drawn.
    """
    base = RunSpec(c.architecture, c.task, c.pair, init_seed=c.seed, data_seed=c.seed,
                   order_seed=c.seed, shift=c.shift, width=profile.width, depth=profile.depth,
                   epochs=profile.epochs, batch_size=profile.batch_size)
    n_src = min(profile.n_source, runner.available(c.pair, "source"))
    n_tgt = min(profile.n_target, runner.available(c.pair, "target"))
    source = base.replace(domain="source", n_train=n_src)
    target = base.replace(domain="target", n_train=n_tgt)
    return {"source": source, "target": target,
            "target_diff": target.replace(init_seed=c.seed + DIFFERENT_INIT_OFFSET)}


@dataclass
class Evaluator:
    """Scores states of one architecture on a condition's target test split."""

    runner: Runner
    profile: Profile
    condition: Condition
    target: TrainedRun
    bn_samples: int | None = None  # target training samples BN re-estimation uses (None: all)

    def __post_init__(self):
        c, spec = self.condition, self.target.spec
        self.task = c.task
        self.metric = PRIMARY[c.task]
        self.n_out = self.runner.n_outputs(spec)
        n_test = min(self.profile.n_test, self.runner.available(c.pair, "target", "test"))
        self.x, self.y = self.runner.split(c.pair, "target", c.task, "test", c.seed, c.shift, n_test)
        train_x, train_y = self.runner.split(c.pair, "target", c.task, "train", c.seed, c.shift,
                                             spec.n_train)
        self.bn_x = train_x[:self.bn_samples]
        self.chance = chance_level(c.task, train_y, self.y, self.n_out)[self.metric]
        self.model = self.runner.model(self.target)
        self.layers = conv_layer_names(self.model)
        self.target_value = self.score(self.target.state)

    def score(self, state: dict[str, torch.Tensor], reestimate: bool = False) -> float:
        """The primary metric of ``state`` on the target test split."""
        self.model.load_state_dict(state)
        model = reestimate_bn(self.model, self.bn_x) if reestimate else self.model
        return evaluate(model, self.x, self.y, self.task, self.n_out, metrics=(self.metric,))[self.metric]

    def score_many(self, states: list[dict[str, torch.Tensor]]) -> list[float]:
        """:meth:`score` of every state (no BN re-estimation), the same numbers up to rounding.

        On the CPU, which is bound by arithmetic, the forward work the states share is
        done once (:func:`reuse.scoring.score_states`: 1.5x the loop); on CUDA, bound by
        kernel launches, states are stacked and run 16 at a time with ``vmap``
        (:func:`reuse.group.evaluate_states`: 1.25x there, where sharing gave 0.99x;
        benchmarks/README.md, section c).
        """
        if self.x.device.type == "cuda":
            return evaluate_states(self.model, states, self.x, self.y, self.task, self.n_out,
                                   self.metric, chunk=16)
        scores = score_states(self.model, states, self.x, self.y, self.task, self.n_out, (self.metric,))
        return [s[self.metric] for s in scores]

    def swap_rows(self, source: dict[str, torch.Tensor], key_sets: list[list[str]],
                  target: dict[str, torch.Tensor] | None = None, target_value: float | None = None
                  ) -> list[dict]:
        """One row per key set: the target (or ``target``) with those keys from ``source``,
        scored together by :meth:`score_many`."""
        base = self.target.state if target is None else target
        values = self.score_many([swap_state(base, source, keys) for keys in key_sets])
        return [self._row(v, target_value) for v in values]

    def swap_row(self, source: dict[str, torch.Tensor], keys: list[str], reestimate: bool = False,
                 target: dict[str, torch.Tensor] | None = None, target_value: float | None = None
                 ) -> dict:
        """Score of the target (or ``target``) with ``keys`` from ``source``, as a row."""
        base = self.target.state if target is None else target
        return self._row(self.score(swap_state(base, source, keys), reestimate), target_value)

    def _row(self, value: float, target_value: float | None) -> dict:
        base_value = self.target_value if target_value is None else target_value
        return {**self.condition.factors(), "metric": self.metric, "value": value,
                "target_value": base_value, "chance": self.chance,
                "reuse_score": reuse_score(value, base_value, self.chance)}
