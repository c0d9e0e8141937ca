"""A campaign: what it reacts to, whom it reaches, what it gives, and where it is in its life.

DRAFT → RUNNING ⇄ PAUSED → ENDED. Only a draft or a paused campaign is edited, so every grant is
made under one version, the one it records."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from quanyu.errors import FailedPrecondition, InvalidArgument, split_field_path
from services.marketing.domain.values import (
    Action,
    Audience,
    CampaignState,
    GrantCost,
    Limits,
    Trigger,
    Window,
)

# The fields an update may name; the rest (id, state, version) are the service's.
UPDATABLE_FIELDS = (
    "name",
    "trigger",
    "audience",
    "actions",
    "limits",
    "holdout_percent",
    "start_time",
    "end_time",
    "priority",
)
# Fields whose own fields an update mask may name one by one ("limits.max_grants").
_NESTED = ("audience", "limits")

_MOVES: dict[CampaignState, frozenset[CampaignState]] = {
    CampaignState.DRAFT: frozenset({CampaignState.RUNNING}),
    CampaignState.RUNNING: frozenset({CampaignState.PAUSED, CampaignState.ENDED}),
    CampaignState.PAUSED: frozenset({CampaignState.RUNNING, CampaignState.ENDED}),
    CampaignState.ENDED: frozenset(),
}


@dataclass
class Campaign:
    campaign_id: str
    name: str
    trigger: Trigger
    audience: Audience = field(default_factory=Audience)
    actions: tuple[Action, ...] = ()
    limits: Limits = field(default_factory=Limits)
    holdout_percent: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    priority: int = 0
    version: int = 1
    state: CampaignState = CampaignState.DRAFT
    # Breaks ties between campaigns of one priority: the older one wins.
    create_time: datetime | None = None

    @property
    def window(self) -> Window:
        return Window(self.start_time, self.end_time)

    @property
    def cost(self) -> GrantCost:
        return GrantCost.of(self.actions)

    def is_live(self, at: datetime) -> bool:
        """Whether the campaign grants at `at`: running, and within its start and end."""
        return self.state is CampaignState.RUNNING and self.window.holds(at)

    def start(self) -> None:
        self._move(CampaignState.RUNNING)

    def pause(self) -> None:
        self._move(CampaignState.PAUSED)

    def end(self) -> None:
        self._move(CampaignState.ENDED)

    def _move(self, to: CampaignState) -> None:
        # A repeated call (a retried RPC) finds the campaign where it asked it to be: no error.
        if self.state is to:
            return
        if to not in _MOVES.get(self.state, frozenset()):
            raise FailedPrecondition(
                f"a {self.state.value.lower()} campaign cannot be made {to.value.lower()}"
                f" ({_allowed_from(self.state)})",
                reason="INVALID_TRANSITION",
                metadata={"state": self.state.value, "wanted": to.value},
            )
        self.state = to

    def update(self, changes: Campaign, paths: Sequence[str], *, known_tiers: Collection[str]) -> None:
        """The fields named by `paths` taken from `changes` (all updatable fields for an empty
        mask, as AIP-134 says); the result checked whole, then the version moves on by one."""
        if self.state not in (CampaignState.DRAFT, CampaignState.PAUSED):
            raise FailedPrecondition(
                f"a {self.state.value.lower()} campaign cannot be changed; pause it first",
                reason="INVALID_TRANSITION",
                metadata={"state": self.state.value},
            )
        # Imported here: validation reads campaigns, and a campaign asks it only when it changes.
        from services.marketing.domain.validation import validate_campaign

        updated = dataclasses.replace(self)
        for path in paths or UPDATABLE_FIELDS:
            _apply(updated, changes, path)
        validate_campaign(updated, known_tiers=known_tiers)
        for name in UPDATABLE_FIELDS:
            setattr(self, name, getattr(updated, name))
        self.version += 1


def _allowed_from(state: CampaignState) -> str:
    moves = sorted(s.value.lower() for s in _MOVES.get(state, frozenset()))
    return f"from {state.value.lower()} it may become {' or '.join(moves)}" if moves else "it is final"


def _apply(target: Campaign, changes: Campaign, path: str) -> None:
    head, index, rest = split_field_path(path)
    if index is not None or head not in UPDATABLE_FIELDS or (rest and head not in _NESTED):
        raise InvalidArgument("update_mask", f"{path!r} is not a field a campaign update may change")
    if not rest:
        setattr(target, head, getattr(changes, head))
        return
    inner = getattr(target, head)
    if rest not in {f.name for f in dataclasses.fields(inner)}:
        raise InvalidArgument("update_mask", f"{path!r} is not a field a campaign update may change")
    setattr(target, head, dataclasses.replace(inner, **{rest: getattr(getattr(changes, head), rest)}))
