"""``ccguard score``: score a JSONL or Parquet file of prompts (and responses) with a guard, here or on Ray."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from ccguard.errors import CcguardError


def _check(obj: dict[str, Any], where: str) -> dict[str, Any]:
    from ccguard.records import parse_prompt

    if "id" not in obj:
        raise CcguardError("missing field 'id'", where=where)
    if "prompt" not in obj:
        raise CcguardError("missing field 'prompt'", where=where)
    parse_prompt(obj["prompt"], where=where)
    if "response" in obj and obj["response"] is not None and not isinstance(obj["response"], str):
        raise CcguardError("field 'response' must be a string", where=where)
    return obj


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def _arrow(path: Path) -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CcguardError("Parquet needs pyarrow: pip install 'ccguard-classifiers[ray]'", where=str(path)) from None
    return pa, pq


def _read(path: Path) -> tuple[list[dict[str, Any]], Any]:
    """The validated records, and for Parquet the table itself, so a Parquet output keeps its column types."""
    if not _is_parquet(path):
        from ccguard.records import iter_jsonl

        return [_check(obj, f"{path}:{n}") for n, obj in iter_jsonl(path)], None
    pa, pq = _arrow(path)
    if not path.is_file():
        raise CcguardError("file not found", where=str(path))
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise CcguardError(f"not a readable Parquet file ({e})", where=str(path)) from None
    return [_check(obj, f"{path}:row {n}") for n, obj in enumerate(table.to_pylist(), 1)], table


def _write_parquet(out: Path, records: list[dict[str, Any]], added: list[dict[str, Any]], table: Any) -> None:
    pa, pq = _arrow(out)
    types = {"input_score": pa.float64(), "input_flagged": pa.bool_(), "output_score": pa.float64(),
             "output_flagged": pa.bool_(), "output_stop_char": pa.int64()}
    try:
        if table is None:
            # Columns from every record's keys (pyarrow's from_pylist would take the first record's keys only).
            keys = list(dict.fromkeys(k for r in records for k in r))
            table = pa.table({k: pa.array([r.get(k) for r in records]) for k in keys})
        for name, typ in types.items():
            if name.startswith("output_") and not any(name in a for a in added):
                continue  # no record has a response: no output columns, as no JSONL line would have output fields
            col = pa.array([a.get(name) for a in added], type=typ)
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, col) if i >= 0 else table.append_column(name, col)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        os.close(fd)
        try:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except pa.ArrowException as e:
        raise CcguardError(f"these records cannot be written as Parquet ({e}); write JSONL instead", where=str(out)) from None


def score(
    guard: Annotated[str, typer.Option("--guard", help="Guard artifact directory, or a Hub repo id (hf://org/name).")],
    in_: Annotated[Path, typer.Option("--in", help="Input: JSONL ({id, prompt[, response]} per line) or .parquet.")],
    out: Annotated[Path, typer.Option("--out", help="Output, written atomically: .parquet, else JSONL.")],
    batch_size: Annotated[int, typer.Option(min=1, help="Records scored per batch.")] = 64,
    engine: Annotated[str, typer.Option(help="local (this process) or ray (Ray Data actors on RAY_ADDRESS, or a local Ray).")] = "local",
    workers: Annotated[int, typer.Option(min=1, max=4096, help="With --engine ray: actors, each with its own guard.")] = 2,
    runtime: Annotated[str, typer.Option(help="Classifier runtime: torch, or fast (int8 on the CPU; pip install 'ccguard-classifiers[fast]').")] = "torch",
) -> None:
    """Score every record; adds input_score/input_flagged (and output_* when a response is present)."""
    from tqdm.auto import tqdm

    from ccguard.classifiers.fast import check_runtime
    from ccguard.guard import read_manifest
    from ccguard.records import atomic_write_text
    from ccguard.scale import check_engine, score_batch, score_on_ray

    check_engine(engine, workers)
    check_runtime(runtime)
    from ccguard.hub import resolve

    guard_dir = resolve(guard)
    manifest = read_manifest(guard_dir)  # fail fast on a wrong --guard before reading the input
    rows, table = _read(in_)
    if manifest.output is None and any(r.get("response") is not None for r in rows):
        raise CcguardError("records have responses but this guard has no output classifier", where=str(guard))
    with tqdm(total=len(rows), desc="scoring", unit="rec", disable=not sys.stderr.isatty()) as bar:
        if engine == "ray":
            added = score_on_ray(guard_dir, rows, workers=workers, batch_size=batch_size, runtime=runtime, progress=bar.update)
        else:
            from ccguard.guard import Guard

            g = Guard.load(guard_dir, runtime=runtime)
            added = []
            for i in range(0, len(rows), batch_size):
                batch = rows[i : i + batch_size]
                added += score_batch(g, batch)
                bar.update(len(batch))
    if _is_parquet(out):
        _write_parquet(out, rows, added, table)
    else:
        # default=str: Parquet input may carry dates or decimals, which JSON has no type for.
        lines = (json.dumps({**r, **a}, ensure_ascii=False, default=str) for r, a in zip(rows, added, strict=True))
        atomic_write_text(out, "".join(line + "\n" for line in lines))
    flagged = sum(a["input_flagged"] for a in added)
    typer.echo(f"scored {len(added)} records ({flagged} inputs flagged) -> {out}", err=True)
