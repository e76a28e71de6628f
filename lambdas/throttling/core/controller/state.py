"""What the controller remembers about one downstream between periods, and what one decision returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from throttling.core.controller.aimd import AimdState
from throttling.core.controller.gradient import GradientState
from throttling.core.controller.setting import Setting

__all__ = ["ACTIONS", "Action", "ControllerState", "Decision"]

ACTIONS = ("increase", "decrease", "clamp", "hold")
Action = Literal["increase", "decrease", "clamp", "hold"]


@dataclass(frozen=True)
class ControllerState:
    """What the controller remembers about one downstream between periods.

    `written` is the setting it last wrote: a setting in SSM that differs from it was changed by
    someone else (an operator, a redeploy), and the controller adopts it instead of fighting it.
    Each algorithm keeps its own memory (`aimd`, `gradient`) and touches no other's; both are kept,
    so a change of mode and back loses nothing either learnt.
    """

    clean_periods: int = 0
    last_period_end: float | None = None
    last_decrease_at: float | None = None
    last_change_at: float | None = None
    written: Setting | None = None
    aimd: AimdState = field(default_factory=AimdState)
    gradient: GradientState = field(default_factory=GradientState)


@dataclass(frozen=True)
class Decision:
    """The next setting and state, what was done, and why (logged and emitted with every change)."""

    setting: Setting
    previous: Setting
    state: ControllerState
    action: Action
    reason: str

    @property
    def changed(self) -> bool:
        return self.setting != self.previous
