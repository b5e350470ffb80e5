"""``ccguard eval``: suites against a guard and the baselines; JSON, Markdown and HTML reports with plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ccguard.cli.llm_options import LLMConfigFile, client_from_options


def _judge(spec: str | None, llm_config: Path | None):
    """The judge as an LLM client (request cache and token meter included): ``KIND:MODEL[@BASE_URL]``, ``local``,
    or the name of a backend in ``--llm-config``."""
    if not spec:
        return None
    kind, _, rest = spec.partition(":")
    if kind in ("openai", "anthropic", "local"):
        model, _, url = rest.partition("@")
        return client_from_options(kind, model or None, url or None, None, None, llm_config, no_cache=False)
    if rest or llm_config is None:
        from ccguard.errors import CcguardError

        raise CcguardError(f"--judge {spec!r}: use openai:MODEL[@BASE_URL], anthropic:MODEL, local[:MODEL], or a backend name from --llm-config")
    return client_from_options(spec, None, None, None, None, llm_config, no_cache=False)


def eval_(
    guard: Annotated[Path, typer.Option(help="Guard artifact directory.")],
    suite: Annotated[list[str] | None, typer.Option(help="Bundled suite (synthetic, dev) or a suite YAML; repeatable.")] = None,
    out: Annotated[Path | None, typer.Option(help="Report directory (default: <run>/eval).")] = None,
    baselines: Annotated[str, typer.Option(help="Comma-separated registered baselines (built-in: keyword, tfidf_lr, minilm_lr, no_augmentation), all, or none.")] = "all",
    max_items: Annotated[int | None, typer.Option(help="Cap items per set (quick runs).")] = None,
    wall: Annotated[bool, typer.Option(help="Also measure wall-time overhead against local SmolLM2 generating.")] = False,
    judge: Annotated[str | None, typer.Option(help="LLM judge for rubric grading: openai:MODEL or openai:MODEL@BASE_URL, anthropic:MODEL, local or local:MODEL, or a backend name from --llm-config.")] = None,
    llm_config: LLMConfigFile = None,
) -> None:
    """Evaluate a guard: flagged rates with Wilson CIs, AUROC/AUPRC, TPR at fixed FPRs, breakdowns, overhead."""
    from ccguard.evaluate.runner import all_baselines, run_eval
    from ccguard.evaluate.suite import load_suite
    from ccguard.guard import read_manifest

    manifest = read_manifest(guard)
    if max_items is None and manifest.config.get("profile") == "smoke":
        max_items = 50  # a smoke guard gets a smoke-sized eval (under a minute on 2 cores)
    known = all_baselines()
    names = () if baselines.strip() in ("", "none") else known if baselines.strip() == "all" else tuple(b.strip() for b in baselines.split(","))
    unknown = [b for b in names if b not in known]
    if unknown:
        from ccguard.errors import CcguardError

        raise CcguardError(f"unknown baseline(s): {', '.join(unknown)} (known: {', '.join(known)})")
    suites = [load_suite(s) for s in (suite or ["synthetic"])]
    out_dir = out or (guard.parent / "eval")
    run_eval(guard, suites, out_dir, baselines=names, max_items=max_items, wall=wall, judge=_judge(judge, llm_config))
    typer.echo(f"report: {out_dir / 'report.html'}", err=True)
