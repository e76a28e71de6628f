"""The controller: pure algorithms that retune one downstream's concurrency and rate from one period's metrics.

`decide` takes what one period showed for one downstream, the setting in force, the bounds, the
controller's state and the policy (whose `algorithm`, `Aimd` or `Gradient`, says how latency moves
the concurrency), and returns the next setting, the next state and a reason. It imports no AWS
library and never reads the clock. How each algorithm works, the failure modes each guard answers,
and the defaults: README.md next to this file.
"""

from throttling.core.controller.aimd import Aimd, AimdState
from throttling.core.controller.algorithm import LatencyJudgement, LimitAlgorithm
from throttling.core.controller.decide import decide
from throttling.core.controller.gradient import Gradient, GradientState
from throttling.core.controller.period import ALARM_KINDS, AlarmSignal, PeriodMetrics, evaluated_period
from throttling.core.controller.policy import ALGORITHMS, MODES, ControllerPolicy
from throttling.core.controller.setting import Bounds, Setting
from throttling.core.controller.state import ACTIONS, ControllerState, Decision

__all__ = [
    "ACTIONS",
    "ALARM_KINDS",
    "ALGORITHMS",
    "MODES",
    "Aimd",
    "AimdState",
    "AlarmSignal",
    "Bounds",
    "ControllerPolicy",
    "ControllerState",
    "Decision",
    "Gradient",
    "GradientState",
    "LatencyJudgement",
    "LimitAlgorithm",
    "PeriodMetrics",
    "Setting",
    "decide",
    "evaluated_period",
]
