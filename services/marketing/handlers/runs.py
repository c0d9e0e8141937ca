"""Scheduled campaigns run: each due run claimed through the database by one replica at a time,
paged through the audience in member id order, each page granted in one transaction together
with the cursor's advance, so a run taken over after a crash resumes where the last page ended.
A page is decided in a read transaction first (its members, their decided slots and counts, their
grants and effects) and then recorded in a short write transaction that asks again only what can
change under it, so on SQLite the single writer is not held while Python decides 2,000 members.

A run is one (campaign, local date, time zone): its members are those whose home store keeps that
zone, and it is due at the campaign's local time there. So a 10:00 greeting reaches Shanghai at
Shanghai's ten o'clock and Ürümqi at Ürümqi's, two hours later, each as its own run with its own
claim and cursor, instead of one run per date that would have to stay open all day waiting for
the western zones. The occurrence is the campaign and the member's local date (occurrence_of_run),
the same for every zone, so per-member limits and grant keys count one reach per day."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import date, datetime, timedelta

import structlog

from quanyu.unit_of_work import Clock, Transaction, UnitOfWork
from services.marketing.domain import (
    DEFAULT_TIME_ZONE,
    Campaign,
    ContactPolicy,
    ScheduleKind,
    due_at,
    is_held_out,
    member_window_start,
    occurrence_of_run,
    occurrence_slot,
    picks,
    zone_of,
)
from services.marketing.domain.schedules import local_date
from services.marketing.handlers.effects import WantedMessage, effects_of, send_messages
from services.marketing.metrics import GRANT_DECISIONS
from services.marketing.ports import GrantRecord, Outcome, Profile, RunClaim, Stores

Tx = Transaction[Stores]

log = structlog.get_logger("quanyu.marketing.runs")

# Every zone's runs of a ONCE campaign with a start: due at that one instant everywhere.
EVERY_ZONE = "*"


@dataclass(frozen=True)
class DueRun:
    campaign_id: str
    kind: ScheduleKind
    run_key: str
    zone: str  # the members' zone, or EVERY_ZONE
    day: date  # the members' local date
    occurrence_id: str
    # Yesterday's run: only resumed when it was begun, never started a day late.
    resume_only: bool = False


@dataclass(frozen=True)
class RunResult:
    """What one call did to a run: the decisions made, by outcome, and whether the run is done
    (False: another replica holds it, the campaign stopped running, or it is still going)."""

    run_key: str
    decisions: Counter[Outcome] = field(default_factory=Counter)
    finished: bool = False


@dataclass(frozen=True)
class _Page:
    claim: RunClaim
    decisions: Counter[Outcome]
    finished: bool


@dataclass(frozen=True)
class _Candidate:
    """A member of a page not yet decided when it was read, with the decision made for them then
    (the record and, for a grant, its effects), kept when the write finds nothing changed."""

    profile: Profile
    slot: str
    record: GrantRecord
    effects: list[tuple[str, dict[str, object]]]
    wanted: list[WantedMessage]


@dataclass(frozen=True)
class _Plan:
    """A page as decided in a read transaction, for a short write transaction to record."""

    campaign: Campaign
    now: datetime
    cursor: str
    # Fewer members than a page: the audience is through once this page is recorded.
    last: bool
    candidates: list[_Candidate]


@dataclass
class RunCases:
    uow: UnitOfWork[Stores]
    _: KW_ONLY
    clock: Clock
    # This replica's name on the claims it holds.
    runner: str
    # The zone of a home store as fulfilment keeps it ("" when unknown), and every zone its
    # stores are in: downstream.StoreZones in the service, a mapping in tests.
    store_zone: Callable[[str], str] = lambda _store_id: ""
    store_zones: Callable[[], Iterable[str]] = lambda: ()
    policy: ContactPolicy = field(default_factory=ContactPolicy)
    page_size: int = 2000
    # Longer than a page takes: a holder renews it with every page it commits.
    lease: timedelta = timedelta(minutes=2)
    # Told once a page's grants are committed: the outbox relay takes their effects at once.
    wake: Callable[[], None] = lambda: None

    def run_due(self) -> int:
        """Every run due now that nobody else holds, each run to its end: the scheduler's pass,
        run periodically on every replica. How many decisions it made (for the task's log)."""
        made = 0
        for due in self.due_runs():
            try:
                made += sum(self.run(due).decisions.values())
            except Exception:
                # One campaign's run failing (its database call refused, say) holds back neither
                # the others' nor its own next pass, which resumes it from its cursor.
                log.exception("scheduled run failed", campaign_id=due.campaign_id, run_key=due.run_key)
        return made

    def due_runs(self) -> list[DueRun]:
        """The runs of running, live scheduled campaigns due by now and not done: today's in each
        zone once its local time has come, and yesterday's when one was left unfinished."""
        return self.uow.read(self._due_runs)

    def run(self, due: DueRun) -> RunResult:
        """Claim the run and grant page after page until its audience is through, the campaign's
        budget has run out, the campaign stopped running, or another replica has taken it over."""
        now = self.clock()
        claim = self.uow.run(
            lambda tx: tx.stores.runs.claim(due.campaign_id, due.run_key, self.runner, now, self.lease)
        )
        decisions: Counter[Outcome] = Counter()
        while claim is not None:
            plan = self.uow.read(functools.partial(self._plan, due=due, claim=claim))
            if plan is None:
                break
            page = self.uow.run(functools.partial(self._record, due=due, claim=claim, plan=plan))
            if page is None:
                break
            decisions.update(page.decisions)
            if page.finished:
                return RunResult(due.run_key, decisions, finished=True)
            claim = page.claim
        return RunResult(due.run_key, decisions)

    # --- which runs are due --------------------------------------------------------------------

    def _due_runs(self, tx: Tx) -> list[DueRun]:
        stores = tx.stores
        now = self.clock()
        live = [c for c in stores.campaigns.running_scheduled() if c.is_live(now)]
        # The members' zones are read only when a live campaign runs zone by zone: it is a scan of
        # every profile, too dear for each pass of every replica when nothing needs it (no
        # scheduled campaign, or only one-off ones with a start time, which run over everyone).
        zones = (
            sorted(
                {DEFAULT_TIME_ZONE}
                | {zone_of(z).key for z in stores.facts.time_zones()}
                | {zone_of(z).key for z in self.store_zones()}
            )
            if any(_by_zone(c) for c in live)
            else []
        )
        due: list[DueRun] = []
        for campaign in live:
            due.extend(r for r in self._runs_of(campaign, zones, now) if self._open(stores, r))
        return due

    @staticmethod
    def _open(stores: Stores, run: DueRun) -> bool:
        found = stores.runs.get(run.campaign_id, run.run_key)
        if found is None:
            return not run.resume_only
        return not found.done

    @staticmethod
    def _runs_of(campaign: Campaign, zones: Sequence[str], now: datetime) -> list[DueRun]:
        schedule = campaign.trigger.schedule
        assert schedule is not None
        kind, cid = schedule.kind, campaign.campaign_id
        if not _by_zone(campaign):
            # One instant for every member, wherever they are: one run over the whole audience.
            occurrence = occurrence_of_run(cid, kind, local_date(now, zone_of("")))
            return [DueRun(cid, kind, "once", EVERY_ZONE, local_date(now, zone_of("")), occurrence)]
        runs = []
        for zone_name in zones:
            zone = zone_of(zone_name)
            today = local_date(now, zone)
            # Yesterday's too: a run that a crash left unfinished across midnight is resumed
            # rather than dropped (one never begun is not started a day late).
            days = (today,) if kind is ScheduleKind.ONCE else (today - timedelta(days=1), today)
            for day in days:
                at = due_at(kind, schedule.local_time, zone, day, campaign.start_time)
                if at > now or (campaign.start_time is not None and at < campaign.start_time):
                    continue
                key = f"once@{zone_name}" if kind is ScheduleKind.ONCE else f"{day.isoformat()}@{zone_name}"
                occurrence = occurrence_of_run(cid, kind, day)
                runs.append(DueRun(cid, kind, key, zone_name, day, occurrence, resume_only=day < today))
        return runs

    # --- one page ------------------------------------------------------------------------------

    def _held(self, stores: Stores, due: DueRun, claim: RunClaim, now: datetime) -> Campaign | None:
        """The campaign, while this claim still holds the run and the campaign is live."""
        held = stores.runs.get(due.campaign_id, due.run_key)
        if (
            held is None
            or held.done
            or (held.claimed_by, held.attempts) != (claim.claimed_by, claim.attempts)
        ):
            return None  # taken over by another replica, which carries on from the cursor
        campaign = stores.campaigns.get(due.campaign_id)
        if campaign is None or not campaign.is_live(now):
            # Paused or ended: the claim is left to lapse; a campaign resumed today carries on
            # from the cursor, one ended never runs again.
            return None
        return campaign

    def _plan(self, tx: Tx, *, due: DueRun, claim: RunClaim) -> _Plan | None:
        """The next page decided in a read transaction: its members in the audience, those of
        them without a decision yet, and each one's decision, its record and effects built."""
        stores = tx.stores
        now = self.clock()
        campaign = self._held(stores, due, claim, now)
        if campaign is None:
            return None
        profiles = stores.facts.profiles_after(claim.cursor, self.page_size)
        picked = self._picked(stores, campaign, due, profiles, now)
        cid = campaign.campaign_id
        slots = {
            p.facts.member_id: occurrence_slot(cid, p.facts.member_id, due.occurrence_id) for p in picked
        }
        decided = stores.grants.decided(list(slots.values()))
        fresh = [p for p in picked if slots[p.facts.member_id] not in decided]
        if _daily(campaign):
            reached = stores.grants.reached(cid, [p.facts.member_id for p in fresh])
            fresh = [p for p in fresh if p.facts.member_id not in reached]
        candidates = []
        for profile in fresh:
            member_id = profile.facts.member_id
            # The control group is drawn before any limit, as for an event's grant. The others are
            # planned as granted: their counts are read in the write, where they count, and a
            # member over the limit (rare in a run, which skips those it reached) is decided again.
            held_out = is_held_out(cid, member_id, campaign.holdout_percent)
            outcome, limit = self._outcome(campaign, held_out=held_out, count=0)
            candidates.append(
                self._candidate(
                    campaign,
                    due.occurrence_id,
                    profile,
                    slot=slots[member_id],
                    outcome=outcome,
                    limit=limit,
                    now=now,
                )
            )
        cursor = profiles[-1].facts.member_id if profiles else claim.cursor
        return _Plan(campaign, now, cursor, len(profiles) < self.page_size, candidates)

    def _record(self, tx: Tx, *, due: DueRun, claim: RunClaim, plan: _Plan) -> _Page | None:
        """The planned page written with the cursor's advance, asking again only what can have
        changed since it was read: the claim, the campaign, the members' slots and counts."""
        stores = tx.stores
        now = self.clock()
        campaign = self._held(stores, due, claim, now)
        if campaign is None:
            return None
        if campaign.version != plan.campaign.version:
            # Edited since: the page is decided again under the new version, from the same cursor.
            return _Page(claim, Counter(), finished=False)
        decisions, exhausted = self._grant_page(tx, campaign, due.occurrence_id, plan)
        # The lease runs from this write, not from the read: a page slow to decide must not
        # shorten it and invite another replica to take over a run that is going well.
        moved = stores.runs.advance(claim, plan.cursor, now, self.lease)
        # A budget run out ends the run: every member after would only be refused.
        finished = exhausted or plan.last
        if finished:
            stores.runs.finish(moved, now)
        return _Page(moved, decisions, finished)

    @staticmethod
    def _outcome(campaign: Campaign, *, held_out: bool, count: int) -> tuple[Outcome, str]:
        """A member's decision before the budget: GRANTED here means wanting a grant."""
        if held_out:
            return Outcome.HELD_OUT, ""
        if count >= campaign.limits.grants_per_member:
            return Outcome.LIMIT_REACHED, "per_member_max"
        return Outcome.GRANTED, ""

    @staticmethod
    def _candidate(
        campaign: Campaign,
        occurrence_id: str,
        profile: Profile,
        *,
        slot: str,
        outcome: Outcome,
        limit: str,
        now: datetime,
    ) -> _Candidate:
        member_id = profile.facts.member_id
        # profiles_after answers standing members only, so each is their own limits' holder.
        record = GrantRecord.decided(
            campaign, member_id, occurrence_id, outcome, holder_id=member_id, at=now, limit_name=limit
        )
        effects, wanted = effects_of(campaign, record, profile) if outcome is Outcome.GRANTED else ([], [])
        return _Candidate(profile, slot, record, effects, wanted)

    def _zone_name(self, profile: Profile, zones: dict[str, str]) -> str:
        facts = profile.facts
        name = facts.time_zone or self.store_zone(facts.home_store_id)
        if name not in zones:
            zones[name] = zone_of(name).key
        return zones[name]

    def _picked(
        self, stores: Stores, campaign: Campaign, due: DueRun, profiles: Sequence[Profile], now: datetime
    ) -> list[Profile]:
        """The page's members this run reaches: in its zone, in the audience as they stand now, and
        picked by the schedule's kind on their local date."""
        schedule = campaign.trigger.schedule
        assert schedule is not None
        kind = schedule.kind
        names: dict[str, str] = {}
        inside = [
            p
            for p in profiles
            if (due.zone == EVERY_ZONE or self._zone_name(p, names) == due.zone)
            and campaign.audience.why_not(p.facts, None) is None
        ]
        if kind in (ScheduleKind.ONCE, ScheduleKind.DAILY):
            return inside
        expiries = (
            stores.facts.expiries_of([p.facts.member_id for p in inside])
            if kind is ScheduleKind.POINTS_EXPIRING
            else {}
        )
        zone = zone_of(due.zone if due.zone != EVERY_ZONE else "")
        return [
            p
            for p in inside
            if picks(
                kind,
                day=due.day,
                zone=zone,
                at=now,
                days=schedule.days,
                birthday=p.facts.birthday,
                last_order=p.last_order_time,
                expiries=expiries.get(p.facts.member_id, ()),
            )
        ]

    def _grant_page(
        self, tx: Tx, campaign: Campaign, occurrence_id: str, plan: _Plan
    ) -> tuple[Counter[Outcome], bool]:
        """TriggerCases.grant for a page of members at once, in the same lock order (the members'
        turns, then the campaign's counters, then the grant rows) so a page and an event for one
        of its members queue rather than deadlock; each step one statement for the whole page.
        The decisions planned are kept unless a member's slot or count moved since they were
        read. True beside the decisions when the budget refused some."""
        stores = tx.stores
        cid = campaign.campaign_id
        now = plan.now
        fresh = plan.candidates
        if fresh and _daily(campaign):
            # A daily campaign is for members not yet reached: those it granted or held out on an
            # earlier day are passed over, not recorded again as refused every day.
            reached = stores.grants.reached(cid, [c.profile.facts.member_id for c in fresh])
            fresh = [c for c in fresh if c.profile.facts.member_id not in reached]
        if not fresh:
            return Counter(), False
        stores.grants.lock_members(cid, [c.profile.facts.member_id for c in fresh])
        # Asked again under the members' locks, as TriggerCases.grant does: an event may have
        # decided one of them since the page was read.
        decided = stores.grants.decided([c.slot for c in fresh])
        fresh = [c for c in fresh if c.slot not in decided]
        since = member_window_start(campaign.limits, campaign.start_time, now)
        counts = stores.grants.counts_for(cid, [c.profile.facts.member_id for c in fresh], since)
        outcomes: dict[str, tuple[Outcome, str]] = {}
        wanting: list[str] = []
        for candidate in fresh:
            member_id = candidate.profile.facts.member_id
            # Drawn when the page was read, under this same version of the campaign.
            held_out = candidate.record.outcome is Outcome.HELD_OUT
            outcome, limit = self._outcome(campaign, held_out=held_out, count=counts.get(member_id, 0))
            if outcome is Outcome.GRANTED:
                wanting.append(member_id)
            else:
                outcomes[member_id] = (outcome, limit)
        taken, refusal = stores.budgets.take_up_to(cid, campaign.limits, campaign.cost, len(wanting), now)
        for index, member_id in enumerate(wanting):
            refused = (Outcome(refusal.verdict.value), refusal.limit)
            outcomes[member_id] = (Outcome.GRANTED, "") if index < taken else refused
        kept = []
        for planned in fresh:
            outcome, limit = outcomes[planned.profile.facts.member_id]
            if (outcome, limit) == (planned.record.outcome, planned.record.limit_name):
                kept.append(planned)
            else:
                # Decided again: the member's count or the budget moved since the page was read.
                kept.append(
                    self._candidate(
                        campaign,
                        occurrence_id,
                        planned.profile,
                        slot=planned.slot,
                        outcome=outcome,
                        limit=limit,
                        now=now,
                    )
                )
        records = [c.record for c in kept]
        effects = [e for c in kept for e in c.effects]
        stores.grants.add_many(records)
        stores.outbox.add_many(effects, now)
        send_messages(stores, [w for c in kept for w in c.wanted], policy=self.policy)
        decisions = Counter(r.outcome for r in records)
        tx.after_commit(functools.partial(_count, decisions))
        if effects:
            tx.after_commit(self.wake)
        return decisions, taken < len(wanting)


def _count(decisions: Counter[Outcome]) -> None:
    # Counted once committed, as an event's grants are.
    for outcome, count in decisions.items():
        GRANT_DECISIONS.labels(outcome.value).inc(count)


def _daily(campaign: Campaign) -> bool:
    schedule = campaign.trigger.schedule
    return schedule is not None and schedule.kind is ScheduleKind.DAILY


def _by_zone(campaign: Campaign) -> bool:
    """Whether the campaign's runs go zone by zone, at each zone's local time: all but a one-off
    campaign with a start time, which is one instant everywhere."""
    schedule = campaign.trigger.schedule
    assert schedule is not None
    return not (schedule.kind is ScheduleKind.ONCE and campaign.start_time is not None)
