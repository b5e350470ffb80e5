"""Leaderboard and campaign statistics, computed from the store."""

from __future__ import annotations

from collections import defaultdict

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from ccguard.arena.models import Attempt, Participant, Run, Target
from ccguard.arena.store import Store


class StageRate(BaseModel):
    model_config = ConfigDict(frozen=True)
    stage: str = Field(description="'input' or 'output'.")
    reached: int = Field(description="Runs that reached this stage.")
    blocked: int = Field(description="Runs this stage stopped.")
    rate: float | None = Field(description="blocked / reached.")


class TargetStats(BaseModel):
    model_config = ConfigDict(frozen=True)
    position: int = Field(description="The target's position in the campaign.")
    question: str = Field(description="The target question.")
    runs: int = Field(description="Finished runs against it.")
    successes: int = Field(description="Runs graded a success.")
    first_success_s: float | None = Field(description="Seconds from the campaign's first attempt to its first success.")


class Row(BaseModel):
    model_config = ConfigDict(frozen=True)
    participant: str = Field(description="The participant's name.")
    attempts: int = Field(description="Attempts made.")
    targets_broken: int = Field(description="Distinct targets with at least one success.")
    successes: int = Field(description="Runs graded a success.")
    universal: int = Field(description="Templates that succeeded on every target.")


class Universal(BaseModel):
    model_config = ConfigDict(frozen=True)
    attempt_id: int = Field(description="The attempt.")
    participant: str = Field(description="Who submitted it.")
    at: float = Field(description="When it finished (unix time).")


class Leaderboard(BaseModel):
    """Everything the leaderboard page shows."""

    model_config = ConfigDict(frozen=True)
    attempts: int = Field(description="Attempts in the campaign.")
    runs: int = Field(description="Finished runs.")
    failed: int = Field(description="Attempts that failed (errors, timeouts, interruptions).")
    successes: int = Field(description="Runs graded a success.")
    stages: list[StageRate] = Field(description="Block rate per guard stage.")
    overall_block_rate: float | None = Field(description="Finished runs the guard stopped at any stage.")
    targets: list[TargetStats] = Field(description="Per target.")
    rows: list[Row] = Field(description="Participants, most targets broken first.")
    universal: list[Universal] = Field(description="Universal-jailbreak candidates, for review.")


def leaderboard(store: Store, campaign_id: int) -> Leaderboard:
    campaign = store.campaign(campaign_id)
    with store.session() as s:
        rows = s.execute(
            select(Run.target_id, Run.blocked_stage, Run.grade_passed, Run.finished_at, Attempt.id, Participant.name,
                   Attempt.universal, Attempt.status, Attempt.finished_at)
            .join(Attempt, Run.attempt_id == Attempt.id).join(Participant, Attempt.participant_id == Participant.id)
            .where(Attempt.campaign_id == campaign_id, Run.status == "done")).all()
        attempts = s.execute(select(Attempt.id, Attempt.status, Attempt.universal, Attempt.finished_at, Attempt.created_at,
                                    Participant.name)
                             .join(Participant, Attempt.participant_id == Participant.id)
                             .where(Attempt.campaign_id == campaign_id)).all()
        positions = dict(s.execute(select(Target.id, Target.position).where(Target.campaign_id == campaign_id)).all())
    # Time to first success counts from the campaign's first attempt (not from when the campaign was stored).
    start = min((a.created_at for a in attempts), default=campaign.created_at)
    n = len(rows)
    blocked_in = sum(r.blocked_stage == "input" for r in rows)
    blocked_out = sum(r.blocked_stage == "output" for r in rows)
    stages = [StageRate(stage="input", reached=n, blocked=blocked_in, rate=blocked_in / n if n else None),
              StageRate(stage="output", reached=n - blocked_in, blocked=blocked_out,
                        rate=blocked_out / (n - blocked_in) if n - blocked_in else None)]
    per_target: dict[int, list] = defaultdict(list)
    for r in rows:
        per_target[r.target_id].append(r)
    targets = []
    for t in campaign.targets:
        rs = per_target.get(t.id, [])
        wins = [r.finished_at for r in rs if r.grade_passed]
        targets.append(TargetStats(position=positions.get(t.id, t.position), question=t.question, runs=len(rs),
                                   successes=len(wins), first_success_s=min(wins) - start if wins else None))
    people: dict[str, dict] = defaultdict(lambda: {"attempts": set(), "broken": set(), "successes": 0, "universal": set()})
    for a in attempts:
        people[a.name]["attempts"].add(a.id)
        if a.universal:
            people[a.name]["universal"].add(a.id)
    for r in rows:
        if r.grade_passed:
            people[r.name]["broken"].add(r.target_id)
            people[r.name]["successes"] += 1
    board = sorted((Row(participant=k, attempts=len(v["attempts"]), targets_broken=len(v["broken"]),
                        successes=v["successes"], universal=len(v["universal"])) for k, v in people.items()),
                   key=lambda x: (-x.universal, -x.targets_broken, -x.successes, x.attempts, x.participant))
    return Leaderboard(
        attempts=len(attempts), runs=n, failed=sum(a.status == "failed" for a in attempts),
        successes=sum(bool(r.grade_passed) for r in rows), stages=stages,
        overall_block_rate=(blocked_in + blocked_out) / n if n else None, targets=targets, rows=board,
        universal=[Universal(attempt_id=a.id, participant=a.name, at=a.finished_at or 0.0)
                   for a in sorted(attempts, key=lambda a: a.id) if a.universal])
