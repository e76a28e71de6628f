"""How the controller decides: the algorithm in use, and the guards and steps every algorithm shares."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from throttling.core import planning
from throttling.core.controller._checks import from_mapping, require_in, require_int
from throttling.core.controller.aimd import Aimd
from throttling.core.controller.algorithm import LimitAlgorithm
from throttling.core.controller.gradient import Gradient
from throttling.core.validation import is_finite_number

__all__ = ["ALGORITHMS", "MODES", "ControllerPolicy"]

# The algorithms by the name a policy document gives them (its `mode`).
ALGORITHMS: dict[str, type[Aimd] | type[Gradient]] = {Aimd.name: Aimd, Gradient.name: Gradient}
MODES = tuple(ALGORITHMS)


@dataclass(frozen=True)
class ControllerPolicy:
    """How the controller decides; every default is the documented one (see README.md).

    :param algorithm: how latency moves the concurrency: `Aimd()` (default) or `Gradient()`, each
        with its own parameters (any `LimitAlgorithm`; a document names only those in `ALGORITHMS`).
    :param min_calls: fewer calls in a period is no evidence either way: hold.
    :param throttle_rate_threshold: 429s per call above which the downstream says slow down.
    :param error_rate_threshold: 5xx and timeouts per call above which we slow down.
    :param decrease_factor: the multiplicative decrease (beta), in (0, 1).
    :param concurrency_step: the additive increase, and the largest increase of one period.
    :param rate_step_fraction: the rate's additive increase, as a fraction of its ceiling.
    :param clean_periods_to_increase: clean periods in a row before any increase (hysteresis).
    :param cooldown_sec: after a decrease, nothing moves for this long, counted from when the decrease
        can first show in the metrics (its time, plus a period, plus the metrics' delay).
    :param setting_propagation_sec: how long a written setting takes to reach every caller (their
        tunables cache); a period that began before a change took effect is no evidence of it.
    :param utilization_to_increase: a limit grows only when this fraction of it is used.
    :param adjust_rate: also move `rate_per_sec` (False: only the concurrency; the rate, and the
        429s that move it, are the shared limiter's inner loop's: a period's 429s no longer cut the
        concurrency, only a 429 alarm in ALARM does).
    :param probe_throttle_rate: 429s per call up to which a period with 429s alone is a probe just
        over the limit: back off to what got through, not by `decrease_factor`.
    :param fallback_margin: how far below what got through such a back-off goes.
    """

    algorithm: LimitAlgorithm = field(default_factory=Aimd)
    min_calls: int = planning.DEFAULT_MIN_CALLS
    throttle_rate_threshold: float = planning.DEFAULT_THROTTLE_RATE_THRESHOLD
    error_rate_threshold: float = planning.DEFAULT_ERROR_RATE_THRESHOLD
    decrease_factor: float = 0.5
    concurrency_step: int = 1
    rate_step_fraction: float = 0.1
    clean_periods_to_increase: int = planning.DEFAULT_CLEAN_PERIODS_TO_INCREASE
    cooldown_sec: float = float(planning.DEFAULT_COOLDOWN_SEC)
    setting_propagation_sec: float = float(planning.DEFAULT_SETTING_PROPAGATION_SEC)
    utilization_to_increase: float = 0.8
    adjust_rate: bool = True
    probe_throttle_rate: float = 0.05
    fallback_margin: float = 0.05

    def __post_init__(self) -> None:
        if not isinstance(self.algorithm, LimitAlgorithm):
            raise ValueError(f"algorithm must implement LimitAlgorithm (e.g. Aimd() or Gradient()), got {self.algorithm!r}")
        require_int("min_calls", self.min_calls, 1)
        require_int("concurrency_step", self.concurrency_step, 1)
        require_int("clean_periods_to_increase", self.clean_periods_to_increase, 1)
        for name in ("throttle_rate_threshold", "error_rate_threshold"):
            require_in(name, getattr(self, name), 0.0, 1.0)
        require_in("decrease_factor", self.decrease_factor, 0.0, 1.0, open_low=True, open_high=True)
        require_in("rate_step_fraction", self.rate_step_fraction, 0.0, 1.0, open_low=True)
        require_in("utilization_to_increase", self.utilization_to_increase, 0.0, 1.0)
        require_in("probe_throttle_rate", self.probe_throttle_rate, 0.0, 1.0)
        require_in("fallback_margin", self.fallback_margin, 0.0, 1.0, open_high=True)
        for name in ("cooldown_sec", "setting_propagation_sec"):
            if not (is_finite_number(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.adjust_rate, bool):
            raise ValueError(f"adjust_rate must be true or false, got {self.adjust_rate!r}")

    @property
    def mode(self) -> str:
        """The algorithm's name, as a policy document spells it."""
        return self.algorithm.name

    def with_p99_latency_threshold(self, threshold_ms: float) -> ControllerPolicy:
        """This policy for a downstream whose plan sets a p99 bar (algorithms that read no p99 ignore it)."""
        return dataclasses.replace(self, algorithm=self.algorithm.with_p99_latency_threshold(threshold_ms))

    @classmethod
    def from_document(cls, raw: Mapping[str, Any]) -> ControllerPolicy:
        """The policy from its flat JSON document: `mode` names the algorithm, whose fields sit beside
        the shared ones; a field left out takes its default. `ValueError` naming a bad or unknown field."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"the controller policy must be an object, got {type(raw).__name__}")
        mode = raw.get("mode", Aimd.name)
        if mode not in ALGORITHMS:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        algorithm_cls = ALGORITHMS[mode]
        own = {f.name for f in dataclasses.fields(algorithm_cls)}
        shared = {f.name for f in dataclasses.fields(cls)} - {"algorithm"}
        unknown = set(raw) - own - shared - {"mode"}
        if unknown:
            raise ValueError(f"unknown controller policy fields {sorted(unknown)} for mode {mode!r};"
                             f" known: {sorted(own | shared | {'mode'})}")
        algorithm = from_mapping(algorithm_cls, {k: v for k, v in raw.items() if k in own}, f"{mode} policy")
        return from_mapping(cls, {"algorithm": algorithm, **{k: v for k, v in raw.items() if k in shared}},
                            "controller policy")

    def to_document(self, fields: Collection[str] | None = None) -> dict[str, Any]:
        """The flat JSON document `from_document` reads back.

        `fields`: only these (the others take the Lambda side's defaults), e.g. the ones the app's
        configuration sets; None: every field.
        """
        parameters = dataclasses.asdict(self.algorithm) if dataclasses.is_dataclass(self.algorithm) else {}
        document = {"mode": self.mode, **parameters,
                    **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "algorithm"}}
        if fields is None:
            return document
        unknown = set(fields) - set(document)
        if unknown:
            raise ValueError(f"unknown controller policy fields {sorted(unknown)}; known: {sorted(document)}")
        return {name: document[name] for name in fields}
