"""``ccguard score``: score a JSONL file of prompts (and responses) with a guard."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ccguard.errors import CcguardError


def _parse(path: Path) -> list[dict[str, Any]]:
    from ccguard.records import iter_jsonl, parse_prompt

    rows = []
    for n, obj in iter_jsonl(path):
        where = f"{path}:{n}"
        if "id" not in obj:
            raise CcguardError("missing field 'id'", where=where)
        if "prompt" not in obj:
            raise CcguardError("missing field 'prompt'", where=where)
        parse_prompt(obj["prompt"], where=where)
        if "response" in obj and obj["response"] is not None and not isinstance(obj["response"], str):
            raise CcguardError("field 'response' must be a string", where=where)
        rows.append(obj)
    return rows


def score(
    guard: Annotated[Path, typer.Option("--guard", help="Guard artifact directory.")],
    in_: Annotated[Path, typer.Option("--in", help="Input JSONL: {id, prompt[, response]} per line.")],
    out: Annotated[Path, typer.Option("--out", help="Output JSONL (written atomically).")],
    batch_size: Annotated[int, typer.Option(help="Records scored per batch.")] = 64,
) -> None:
    """Score every record; adds input_score/input_flagged (and output_* when a response is present)."""
    from tqdm.auto import tqdm

    from ccguard.guard import Guard, read_manifest
    from ccguard.records import atomic_write_text, parse_prompt

    read_manifest(guard)  # fail fast on a wrong --guard before reading the input
    rows = _parse(in_)
    g = Guard.load(guard)
    if any(r.get("response") is not None for r in rows) and g.output_classifier is None:
        raise CcguardError("records have responses but this guard has no output classifier", where=str(guard))
    out_lines = []
    with tqdm(total=len(rows), desc="scoring", unit="rec", disable=not sys.stderr.isatty()) as bar:
        for i in range(0, len(rows), batch_size):
            batch = rows[i : i + batch_size]
            prompts = [parse_prompt(r["prompt"], where=str(in_)) for r in batch]
            verdicts = g.check_inputs(prompts)
            for r, p, v in zip(batch, prompts, verdicts, strict=True):
                rec = dict(r)
                rec["input_score"] = round(v.score, 6)
                rec["input_flagged"] = not v.allowed
                if r.get("response") is not None:
                    ov = g.check_output(p, r["response"])
                    rec["output_score"] = round(ov.score, 6)
                    rec["output_flagged"] = not ov.allowed
                    rec["output_stop_char"] = ov.stop_char
                out_lines.append(json.dumps(rec, ensure_ascii=False))
            bar.update(len(batch))
    atomic_write_text(out, "".join(line + "\n" for line in out_lines))
    flagged = sum('"input_flagged": true' in line for line in out_lines)
    typer.echo(f"scored {len(out_lines)} records ({flagged} inputs flagged) -> {out}", err=True)
