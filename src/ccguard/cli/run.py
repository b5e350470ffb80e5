"""``ccguard run``: the whole pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ccguard.cli import llm_options as o


def run(
    constitution: Annotated[str, typer.Option(help="Bundled constitution name or path to a YAML file.")] = "cbrn",
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/<constitution>).")] = None,
    profile: Annotated[str, typer.Option(help="smoke (about a minute), default (about 23 min on 2 CPU cores in fp32), cascade (default plus the input cascade's stage 2, Gemma 3 270M; needs ccguard-classifiers[cascade]), cascade-multilingual (default plus a fine-tuned multilingual-e5-small input classifier as stage 2; needs ccguard-classifiers[multilingual]), multilingual (the input classifier on multilingual-e5-small), debiased (default with style-debiased training weights, design/021), warm-start (trial: the output classifier starts from the input encoder, design/022), crossed (trial: crossed templates on both sides of the boundary, design/036) or full.")] = "default",
    seed: Annotated[int, typer.Option(help="Seed for data generation, splits and training.")] = 0,
    target_fpr: Annotated[
        float | None,
        typer.Option(min=0.0001, max=0.5, help="False-positive rate on everyday benign traffic the thresholds aim for (default: "
                     "the profile's, 0.005). Re-running with another value recalibrates without retraining."),
    ] = None,
    hard_fpr: Annotated[
        float | None,
        typer.Option(min=0.0001, max=0.5, help="Cap on the input false-positive rate on hard neighbours (harmless CBRN-adjacent "
                     "topics, benign text in ciphers and templates); default: the profile's, 0.02."),
    ] = None,
    conversations: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Share of base requests that also get a multi-turn training variant "
                     "(a crescendo build-up or the request split over turns); default: the profile's, 0. See design/015."),
    ] = None,
    parallel: Annotated[bool, typer.Option(
        "--parallel/--serial", help="On a CPU-only machine, train and calibrate the output classifier in a second "
        "process beside the input side: about 10% faster on 2 cores (design/032); --serial keeps one process, whose "
        "weights a re-run reproduces bit for bit.")] = True,
    backend: o.Backend = None,
    model: o.Model = None,
    base_url: o.BaseUrl = None,
    api_key_env: o.ApiKeyEnv = None,
    helpful_only: o.HelpfulOnly = None,
    llm_config: o.LLMConfigFile = None,
    no_cache: o.NoCache = False,
    llm_batches: Annotated[int, typer.Option(min=1, max=1000, help="With --backend: query requests per category.")] = 4,
    llm_per_batch: Annotated[int, typer.Option(min=1, max=100, help="With --backend: queries asked for per request.")] = 10,
    llm_responses: Annotated[int, typer.Option(min=0, max=10000, help="With --backend: queries per category that get responses.")] = 8,
) -> None:
    """Generate data, train and calibrate a guard, and write a report. Re-running resumes.

    Offline by default. With --backend, an LLM adds stage I queries and responses (runs/<name>/llm) and the LLM
    transforms (paraphrase, translation, persona rewrite, decomposition) add variants.
    """
    from ccguard.pipeline import run as run_pipeline

    client = o.client_from_options(backend, model, base_url, api_key_env, helpful_only, llm_config, no_cache)
    llm_cfg = None
    if client is not None:
        from ccguard.synth.llm import LLMSynthConfig

        llm_cfg = LLMSynthConfig(seed=seed, batches_per_category=llm_batches, queries_per_batch=llm_per_batch,
                                 responses_per_category=llm_responses)
    run_pipeline(constitution, out, profile, seed, client=client, llm_cfg=llm_cfg, target_fpr=target_fpr,
                 hard_fpr=hard_fpr, conversations=conversations, parallel=parallel)
