"""``ccguard redteam --from-arena DB``: train the input classifier on the arena's successful attacks.

Every run that got past the guard and was graded a success becomes a harmful example: the prompt exactly as the
participant sent it, labelled with its target's category. Attacks are split in two halves by *participant*, so a
technique someone resubmitted with small edits never sits in both halves (with one participant, by attempt, the
earlier half against the later one; a template's runs on every target always stay together). Half A is trained on,
half B is held out, and the block rate on B before and after retraining is the out-of-sample number, as in
automated red teaming.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from ccguard.arena.store import Store
from ccguard.errors import CcguardError
from ccguard.records import Example, Message, atomic_write_text, render_prompt, stable_id, write_jsonl


def successful_attacks(db: Path, default_category: str) -> list[tuple[str, int, Example]]:
    """(participant, attempt id, example) for each successful run in the database."""
    out = []
    for row in Store(db).export():
        if not row["grade_passed"] or row["blocked_stage"]:
            continue
        msgs = [Message(role=m["role"], content=m["content"]) for m in row["messages"]]
        prompt: Any = msgs[0].content if len(msgs) == 1 else msgs
        ex = Example(id=stable_id("arena", str(row["run_id"]), render_prompt(prompt)), prompt=prompt, label="harmful",
                     category=row["target_category"] or default_category, source="arena",
                     group=f"arena-{row['attempt_id']}", base=row["target"])
        out.append((row["participant"], row["attempt_id"], ex))
    return out


def split_halves(attacks: list[tuple[str, int, Example]]) -> tuple[list[Example], list[Example]]:
    """Train and held-out halves: whole participants, balanced by count (largest first, each to the smaller half);
    with a single participant, their earlier attempts against their later ones."""
    people: dict[str, int] = {}
    for who, _, _ in attacks:
        people[who] = people.get(who, 0) + 1
    if len(people) >= 2:
        a_side: set[str] = set()
        sizes = [0, 0]
        for who, n in sorted(people.items(), key=lambda kv: (-kv[1], kv[0])):
            side = 0 if sizes[0] <= sizes[1] else 1
            sizes[side] += n
            if side == 0:
                a_side.add(who)
        return [e for w, _, e in attacks if w in a_side], [e for w, _, e in attacks if w not in a_side]
    ids = sorted({aid for _, aid, _ in attacks})
    first = set(ids[: (len(ids) + 1) // 2])
    return [e for _, aid, e in attacks if aid in first], [e for _, aid, e in attacks if aid not in first]


def run_from_arena(db: Path, guard_dir: Path, out_guard: Path | None, *, retrain_steps: int = 150,
                   console: Console | None = None) -> dict[str, Any]:
    from ccguard import constitution as C
    from ccguard.guard import Guard
    from ccguard.policy import flagged_rate
    from ccguard.redteam.loop import retrain_on_evasions

    console = console or Console(stderr=True)
    db, guard_dir = Path(db), Path(guard_dir)
    if not db.is_file():
        raise CcguardError("no arena database here", where=str(db))
    run_dir = guard_dir.parent
    if not (run_dir / "data" / "train.jsonl").is_file():
        raise CcguardError("retraining needs the run's data beside the guard (data/train.jsonl)", where=str(guard_dir))
    guard = Guard.load(guard_dir)
    harmful = [c for c in guard.input_classifier.categories if c != "benign"]
    attacks = successful_attacks(db, harmful[0] if harmful else "harmful")
    ev_a, ev_b = split_halves(attacks)
    clf, thr = guard.input_classifier, guard.policy.input_threshold

    def block(evs: list[Example]) -> dict[str, Any]:
        return flagged_rate([s.score for s in clf.score([render_prompt(e.prompt) for e in evs])], thr).model_dump() if evs else {}

    rt_dir = run_dir / "redteam" / "arena"
    write_jsonl(rt_dir / "attacks_train.jsonl", ev_a)
    write_jsonl(rt_dir / "attacks_heldout.jsonl", ev_b)
    before = {"block_rate_train_attacks": block(ev_a), "block_rate_heldout_attacks": block(ev_b)}
    report: dict[str, Any] = {"db": str(db), "successful_attacks": len(attacks), "participants": len({w for w, _, _ in attacks}),
                              "train_half": len(ev_a),
                              "heldout_half": len(ev_b), "before": before}
    console.print(f"{len(attacks)} successful arena attacks: {len(ev_a)} to train on, {len(ev_b)} held out; held-out "
                  f"blocked before retraining: {before['block_rate_heldout_attacks'].get('rate', 0):.2f}")
    if ev_a and out_guard is not None and retrain_steps > 0:
        report["after"] = retrain_on_evasions(guard, run_dir, ev_a, ev_b, Path(out_guard), retrain_steps,
                                              {k: v.get("rate") for k, v in before.items()}, "attacks", console,
                                              C.load(cpath) if (cpath := guard_dir / "constitution.yaml").is_file() else None)
    elif not ev_a:
        console.print("nothing to retrain on: no successful attacks in the arena yet")
    atomic_write_text(rt_dir / "report.json", json.dumps(report, indent=2))
    return report
