"""Stage I and II of ``ccguard run``: the constitution's synthetic data, augmented and split, for both classifiers.

``build_data`` writes each file of the run's ``data/`` folder atomically, and last its manifest with a fingerprint of
everything the data was built from; it skips the work when a folder with the same fingerprint is complete.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import time
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console

from ccguard.augment import augment
from ccguard.constitution import Constitution
from ccguard.profiles import Profile
from ccguard.records import Example, assign_splits, atomic_write_text, read_examples, write_jsonl
from ccguard.synth import offline
from ccguard.synth.conversations import conversations
from ccguard.synth.pool import load_pool
from ccguard.synth.responses import compose, generate_responses, with_context
from ccguard.transforms.base import TransformContext, load_framings


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# What generates a run's data besides the constitution and the profile: sentence banks, voices, transforms, framings.
_GENERATOR_PARTS = ("synth", "transforms", "data", "augment.py")


def generator_sha(root: Path | None = None) -> str:
    """A hash of the code and bundled data that generate a run's data (``_GENERATOR_PARTS`` under the package root),
    so that editing a lead-in bank or a voice rebuilds the data of an existing run directory instead of reusing it."""
    root = Path(__file__).resolve().parents[1] if root is None else root
    h = hashlib.sha256()
    for part in _GENERATOR_PARTS:
        base = root / part
        files = [base] if base.is_file() else sorted(base.rglob("*"))
        for f in files:
            if f.is_file() and f.suffix in (".py", ".yaml"):
                h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def versions() -> dict[str, str]:
    from ccguard import DIST

    out = {"python": platform.python_version()}
    for key, pkg in (("ccguard", DIST), ("torch", "torch"), ("transformers", "transformers"),
                     ("accelerate", "accelerate"), ("safetensors", "safetensors")):
        try:
            out[key] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[key] = "unknown"
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _llm_stage(const: Constitution, client: Any, cfg: Any, llm_dir: Path, console: Console) -> dict[str, Any]:
    """Stage I via the LLM backend: resumable (journals) and cached, so a re-run costs nothing."""
    from ccguard.llm.client import run_sync
    from ccguard.synth.llm import contained, generate_llm_data

    contained(client, llm_dir.parent)
    m = run_sync(client, lambda: generate_llm_data(const, client, cfg, llm_dir, log=console.print))
    console.print(f"llm data: {m['queries']['kept']} queries, {m['responses']['kept']} exchanges "
                  f"({m['usage']['prompt_tokens']}+{m['usage']['completion_tokens']} tokens, ${m['usage']['cost_usd']:.4f})")
    return m


def build_data(
    const: Constitution, profile: Profile, data_dir: Path, console: Console, seed: int, client: Any = None, llm_dir: Path | None = None
) -> dict[str, Any]:
    """Stage I + II + splits. Writes data/{examples,train,val,test}.jsonl (prompts), data/output_{train,val,test}.jsonl
    (exchanges) and data/manifest.json. With an LLM ``client``, the stage I files in ``llm_dir`` join the offline
    data and the profile's LLM transforms add variants; without one they are skipped with a message."""
    framings = load_framings()
    pool = load_pool(const.benign_pool) if const.benign_pool else None
    synth_cfg = replace(profile.synth, seed=seed)
    aug_cfg = replace(profile.augment, seed=seed)
    fingerprint = _sha(
        {
            "constitution": const.content_hash,
            "pool": pool.model_dump() if pool else None,
            "framings": framings.model_dump(),
            "synth": asdict(synth_cfg),
            "augment": asdict(aug_cfg),
            "responses": asdict(replace(profile.responses, seed=seed)),
            "splits": profile.split_fractions,
            "calib_variants": profile.calib_variants,
            "conversations": asdict(replace(profile.conversations, seed=seed)),
            "version": versions()["ccguard"],
            "generator": generator_sha(),
            "llm": None if client is None else {
                "backend": client.spec.public(),
                "files": {f: file_sha(llm_dir / f) for f in ("queries.jsonl", "exchanges.jsonl")} if llm_dir else None,
                "transforms": profile.llm_transforms,
                "rate": profile.llm_transform_rate,
                "max_tokens": profile.llm_transform_max_tokens,
            },
        }
    )
    manifest_path = data_dir / "manifest.json"
    old = _read_json(manifest_path)
    files = [f"{p}{s}.jsonl" for p in ("", "output_") for s in ("train", "val", "test")] + ["calib.jsonl"]
    if old and old.get("fingerprint") == fingerprint and all((data_dir / f).is_file() for f in files):
        console.print(f"[dim]data: up to date ({old['counts']['total']} examples), skipping[/]")
        return old
    t0 = time.perf_counter()
    base = offline.generate(const, pool, synth_cfg)
    llm_exchanges: list[Example] = []
    llm_stats: dict[str, Any] = {}
    if client is not None and llm_dir is not None:
        llm_base = read_examples(llm_dir / "queries.jsonl")
        llm_exchanges = read_examples(llm_dir / "exchanges.jsonl")
        base += llm_base
        llm_stats["stage_i"] = {"queries": len(llm_base), "exchanges": len(llm_exchanges)}
    ctx = TransformContext(
        rng=random.Random(seed), terms=tuple(const.harmful_terms()), pool=tuple(pool.pairs()) if pool else (), framings=framings
    )
    augmented = augment(base, ctx, aug_cfg)
    if profile.llm_transforms and client is None:
        console.print(f"[yellow]LLM transforms ({', '.join(profile.llm_transforms)}) skipped: no LLM backend "
                      "configured (ccguard run --backend ... to use them)[/]")
        llm_stats["transforms"] = "skipped: no backend"
    elif profile.llm_transforms:
        from ccguard.llm.client import run_sync
        from ccguard.transforms.llm import llm_augment

        variants, llm_stats["transforms"] = run_sync(client, lambda: llm_augment(
            base, client, profile.llm_transforms, rate=profile.llm_transform_rate, seed=seed,
            journal=data_dir / "llm_transforms.jsonl", max_tokens=profile.llm_transform_max_tokens))
        augmented += variants
        console.print(f"LLM transforms: {len(variants)} variants ({llm_stats['transforms']['dropped'] or 'none dropped'})")
    examples = assign_splits(augmented, seed=seed, fractions=profile.split_fractions)
    # Multi-turn variants, built after the split so that their earlier turns come from the same split.
    examples += conversations(examples, const, replace(profile.conversations, seed=seed))
    data_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(data_dir / "examples.jsonl", examples)
    counts: dict[str, Any] = {"total": len(examples), "base": len(base)}
    hashes = {}
    # The benign tail decides the threshold, and a few hundred validation examples sample it thinly. More variants
    # of the *validation* harmless bases (same groups, new transforms) densify it without touching test groups.
    val_base = [e for e in examples if e.split == "val" and e.label == "harmless" and not e.lineage]
    calib_cfg = replace(aug_cfg, seed=seed + 1, variants_per_example=profile.calib_variants)
    calib = [e for e in augment(val_base, ctx, calib_cfg) if e.lineage]
    write_jsonl(data_dir / "calib.jsonl", calib)
    counts["calib"] = {"total": len(calib), "harmful": 0, "harmless": len(calib)}
    hashes["calib"] = file_sha(data_dir / "calib.jsonl")
    exchanges = assign_splits(
        generate_responses(const, pool, replace(profile.responses, seed=seed), framings) + llm_exchanges, seed=seed,
        fractions=profile.split_fractions,
    )
    exchanges += compose(exchanges, profile.responses.compose_rate, seed) + with_context(
        exchanges, const, profile.responses.context_rate, seed)
    for prefix, rows_all in (("", examples), ("output_", exchanges)):
        for split in ("train", "val", "test"):
            rows = [e for e in rows_all if e.split == split]
            write_jsonl(data_dir / f"{prefix}{split}.jsonl", rows)
            counts[prefix + split] = {
                "total": len(rows),
                "harmful": sum(e.label == "harmful" for e in rows),
                "harmless": sum(e.label == "harmless" for e in rows),
            }
            hashes[prefix + split] = file_sha(data_dir / f"{prefix}{split}.jsonl")
    manifest = {
        "fingerprint": fingerprint,
        "constitution": {"name": const.name, "hash": const.content_hash},
        "seed": seed,
        "synth": asdict(synth_cfg),
        "augment": asdict(aug_cfg),
        "counts": counts,
        "sha256": hashes,
        "llm": llm_stats or None,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    console.print(
        f"data: {len(base)} base examples -> {len(examples)} with augmentation "
        f"(train {counts['train']['total']}, val {counts['val']['total']}, test {counts['test']['total']}); "
        f"{len(exchanges)} exchanges for the output classifier"
    )
    return manifest
