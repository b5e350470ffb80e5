"""The deployable guard: load an artifact, score prompts and responses, and decide.

Classifiers produce scores; ``ccguard.policy`` is the only place a score becomes a decision. Output screening has
one core, the async session loop ``_screen``; the sync and one-shot methods are thin wrappers over it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ccguard.classifiers.backbone import resolve_precision
from ccguard.conversation import screen_parts
from ccguard.errors import CcguardError
from ccguard.policy import Calibration, OutputGate, Policy, Verdict
from ccguard.records import Prompt, content_text, parse_prompt, render_prompt, unscreened_parts

__all__ = ["FORMAT_VERSION", "ClassifierInfo", "Guard", "GuardManifest", "Policy", "PreparedPrompt", "Verdict", "read_manifest"]

log = logging.getLogger("ccguard.guard")

FORMAT_VERSION = 2  # 2: classifier.json records the input classifier's decoded views (older ccguard refuses cleanly)
DECODE_EVERY_CHARS = 256  # how often a stream that was asked for an encoded answer re-screens its decoded view


class ClassifierInfo(BaseModel):
    """What one classifier in the artifact is."""

    model_config = ConfigDict(extra="allow")
    path: str = Field(description="Folder, relative to the artifact.")
    backbone: str = Field(description="Backbone name or path it was trained from.")
    calibration: Calibration = Field(description="Threshold and its calibration results.")
    training: dict[str, Any] = Field(default_factory=dict, description="Training arguments and stats.")


def _run_precision(calibrated: str) -> str:
    """The precision to run a classifier calibrated in ``calibrated``: fp32 stays fp32, bf16 where the hardware has it."""
    return "no" if calibrated == "no" else resolve_precision("auto")


class GuardManifest(BaseModel):
    """guard.json: everything needed to load the guard and to know where it came from."""

    model_config = ConfigDict(extra="allow")
    format_version: int = Field(description="Artifact format version.")
    constitution: dict[str, str] = Field(description="Constitution name, version and content hash.")
    refusal: str = Field(description="Refusal text to show when blocking.")
    input: ClassifierInfo = Field(description="The input classifier.")
    output: ClassifierInfo | None = Field(default=None, description="The streaming output classifier, if trained.")
    data: dict[str, Any] = Field(default_factory=dict, description="Data provenance: hashes and counts.")
    config: dict[str, Any] = Field(default_factory=dict, description="Run configuration (profile, seeds).")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Headline metrics.")
    versions: dict[str, str] = Field(default_factory=dict, description="Library versions used to build it.")
    created: str = Field(default="", description="UTC creation time.")
    stages: dict[str, Any] = Field(
        default_factory=dict,
        description="Optional extra stages, e.g. 'probe' (a linear probe on a local upstream's hidden states, "
        "ensembled with the output classifier; see ccguard.probes). A guard without them works as is.",
    )


@dataclass(frozen=True)
class PreparedPrompt:
    """A prompt ready for the input model: the prepared texts it is screened as, and which are earlier turns."""

    parts: tuple[Any, ...]  # classifiers.input.Prepared
    history: tuple[bool, ...]
    unscreened: tuple[str, ...] = ()  # content parts the text classifier cannot read (see records.unscreened_parts)


def _inside(guard_dir: Path, rel: Any, field: str) -> Path:
    """A stage's folder, which guard.json names relative to the artifact: it must stay inside it."""
    if not isinstance(rel, str) or not rel:
        raise CcguardError("must be a folder name relative to the guard", where=f"guard.json {field}")
    path = (guard_dir / rel).resolve()
    if not path.is_relative_to(guard_dir.resolve()):
        raise CcguardError(f"{rel!r} points outside the guard directory", where=f"guard.json {field}")
    return path


def read_manifest(guard_dir: Path) -> GuardManifest:
    path = Path(guard_dir) / "guard.json"
    if not path.is_file():
        raise CcguardError("not a guard artifact (guard.json missing)", where=str(guard_dir))
    try:
        return GuardManifest.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as e:
        raise CcguardError(f"invalid guard manifest: {str(e).splitlines()[0]}", where=str(path)) from None


def _device(name: str) -> Any:
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError:
        raise CcguardError(f"not a torch device: {name!r}", where="device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CcguardError(f"{name!r} requested but no CUDA device is available", where="device")
    return dev


class Guard:
    """Input (and, when trained, output) screening with calibrated thresholds. Safe to share across requests."""

    def __init__(self, manifest: GuardManifest, input_classifier: Any, policy: Policy, output_classifier: Any = None,
                 probe: Any = None, stage2: Any = None) -> None:
        self.manifest = manifest
        self.input_classifier = input_classifier
        self.output_classifier = output_classifier
        self.policy = policy
        self.probe = probe  # a ccguard.probes.ProbeModel for a local upstream, when the artifact has one
        self.stage2 = stage2  # a ccguard.cascade.Stage2, when the artifact has an input cascade
        self.path: Path | None = None  # the directory it was loaded from

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, *, revision: str | None = None,
                        cache_dir: str | Path | None = None, token: str | None = None, local_files_only: bool = False,
                        **load_kwargs: Any) -> Guard:
        """Load a guard from a directory or a Hub repository (``hf://org/name``; a bare ``org/name`` too when no local
        path could be meant), as ``transformers`` models load.
        A repository is fetched with ``huggingface_hub`` into ``cache_dir`` (the Hub cache by default); with
        ``HF_HUB_OFFLINE=1`` or ``local_files_only`` only the cache is read. ``load_kwargs`` go to :meth:`load`."""
        from ccguard.hub import resolve

        return cls.load(resolve(path_or_repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                local_files_only=local_files_only), **load_kwargs)

    def push_to_hub(self, repo_id: str, *, local_hub: str | Path | None = None, private: bool | None = None,
                    token: str | None = None, revision: str | None = None, commit_message: str | None = None,
                    create_pr: bool = False) -> str:
        """Publish this guard's directory with a model card (YAML metadata: constitution hash, thresholds, eval
        table, intended use, limits) to the Hub, or with ``local_hub`` to a local hub folder in the Hub's cache
        layout, which ``from_pretrained("hf://" + repo_id, cache_dir=local_hub)`` reads offline. Returns the commit URL (Hub)
        or hash (local)."""
        from ccguard.hub import push_to_hub

        if self.path is None:
            raise CcguardError("this guard was not loaded from a directory; save it with `ccguard run` first")
        return push_to_hub(self.path, self.manifest, repo_id, local_hub=local_hub, private=private, token=token,
                           revision=revision, commit_message=commit_message, create_pr=create_pr)

    @classmethod
    def load(cls, guard_dir: str | Path, *, device: str | None = None, runtime: str = "torch", cascade: bool = True) -> Guard:
        """Load an artifact directory. Only safetensors weights are read; nothing is unpickled.

        ``cascade``: load the input cascade's stage 2 when the artifact has one (False screens with stage 1 alone,
        at its own calibrated threshold).

        ``device``: where the models run (``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...; default CPU). ``runtime``:
        ``"torch"``, or ``"fast"``: int8 on the CPU (ONNX Runtime for the input classifier), with anything that
        scores near a threshold re-scored in full precision (see ``ccguard.classifiers.fast``)."""
        from ccguard.classifiers.backbone import torch_setup
        from ccguard.classifiers.fast import check_runtime
        from ccguard.classifiers.input import InputClassifier

        guard_dir = Path(guard_dir)
        runtime = check_runtime(runtime, device)
        manifest = read_manifest(guard_dir)
        if manifest.format_version > FORMAT_VERSION:
            raise CcguardError(f"guard format {manifest.format_version} is newer than this ccguard supports", where=str(guard_dir))
        torch_setup()
        inp = InputClassifier.load(_inside(guard_dir, manifest.input.path, "input.path"))
        # Run in the precision the threshold was calibrated in (guards before this field: fp32), unless
        # CCGUARD_PRECISION says otherwise or the hardware lacks bf16.
        calibrated = manifest.config.get("input_precision", "no")
        if "CCGUARD_PRECISION" not in os.environ:
            inp.precision = _run_precision(calibrated)
        if calibrated != inp.precision:
            log.warning("input classifier calibrated in precision %s, running in %s: scores may differ slightly from "
                        "calibration", calibrated, inp.precision)
        out = None
        if manifest.output is not None:
            from ccguard.classifiers.output import OutputClassifier

            out = OutputClassifier.load(_inside(guard_dir, manifest.output.path, "output.path"))
        if device is not None:
            inp.model.to(_device(device))
            if out is not None:
                out.model.to(_device(device))
        probe, stage = None, manifest.stages.get("probe")
        if stage is not None and out is not None:
            from ccguard.probes import ProbeModel

            if not isinstance(stage, dict) or not isinstance(stage.get("ensemble_threshold"), int | float):
                raise CcguardError("must be an object with a numeric ensemble_threshold", where="guard.json stages.probe")

            probe = ProbeModel.load(_inside(guard_dir, stage.get("path"), "stages.probe.path"))
        stage2, casc = None, manifest.stages.get("cascade") if cascade else None
        if casc is not None:
            from ccguard.cascade import ClassifierStage2, Stage2

            if not isinstance(casc, dict):
                raise CcguardError("must be an object", where="guard.json stages.cascade")
            for key in ("escalate_threshold", "threshold"):
                if not isinstance(v := casc.get(key), int | float) or not 0.0 <= v < 1.0:
                    raise CcguardError(f"must be a number in [0, 1), not {v!r}", where=f"guard.json stages.cascade.{key}")
            if casc["escalate_threshold"] > manifest.input.calibration.threshold:
                # Everything stage 1 would block must reach stage 2; a stage calibrated on another stage 1 breaks this.
                raise CcguardError("is above the input threshold: the stage was calibrated for another input classifier "
                                   "(re-run `ccguard cascade`)", where="guard.json stages.cascade.escalate_threshold")
            stage2 = Stage2.load(_inside(guard_dir, casc.get("path"), "stages.cascade.path"))
            if casc.get("precision") and isinstance(stage2, ClassifierStage2) and "CCGUARD_PRECISION" not in os.environ:
                # A classifier stage runs in the precision its cascade threshold was calibrated in, as stage 1 does.
                stage2.classifier.precision = _run_precision(casc["precision"])
            if device is not None:
                stage2.model.to(_device(device))
        policy = Policy(
            input_threshold=manifest.input.calibration.threshold,
            output_threshold=manifest.output.calibration.threshold if manifest.output else None,
            **({"history_margin": manifest.config["history_margin"]} if "history_margin" in manifest.config else {}),
            **({"probe_weight": probe.spec.weight, "ensemble_threshold": stage["ensemble_threshold"]} if probe else {}),
            **({"escalate_threshold": casc["escalate_threshold"], "cascade_weight": stage2.spec.weight,
                "cascade_threshold": casc["threshold"]} if stage2 else {}),
        )
        if runtime == "fast":
            from ccguard.classifiers.fast import use_fast_runtime

            # With a cascade, the escalation threshold is the lowest decision on the input side.
            low = min(policy.input_threshold, policy.escalate_threshold if policy.has_cascade else 1.0)
            use_fast_runtime(inp, out, low, policy.output_threshold)
        guard = cls(manifest, inp, policy, out, probe, stage2)
        guard.path = guard_dir
        return guard

    @property
    def refusal(self) -> str:
        return self.manifest.refusal

    # --- input ---------------------------------------------------------------------------------------------
    def check_inputs(self, prompts: Sequence[Prompt]) -> list[Verdict]:
        """Batched input screening."""
        t0 = time.perf_counter()
        return self.check_prepared([self.prepare_input(p) for p in prompts], t0)

    def prepare_input(self, prompt: Prompt, *, history: bool = False) -> PreparedPrompt:
        """The CPU-only half of an input check (decoded views and windows), for callers that run it in their own
        worker under a time budget; finish with :meth:`check_prepared`. A conversation is read as several texts
        (``ccguard.conversation.screen_parts``); ``history``: all of ``prompt`` is earlier turns."""
        prompt = _parsed(prompt)
        parts = screen_parts(prompt)
        return PreparedPrompt(
            parts=tuple(self.input_classifier.prepare(p.text) for p in parts),
            history=tuple(history or p.history for p in parts),
            unscreened=tuple(unscreened_parts(prompt)),
        )

    def check_prepared(self, prepared: Sequence[PreparedPrompt], t0: float | None = None) -> list[Verdict]:
        """The model half of a batched input check, over :meth:`prepare_input` results."""
        t0 = time.perf_counter() if t0 is None else t0
        scores = iter(self.input_classifier.score_prepared([x for p in prepared for x in p.parts]))
        got = [[next(scores) for _ in p.parts] for p in prepared]
        escalated = self._escalate(prepared, got) if self.stage2 is not None and self.policy.has_cascade else None
        ms = 1000 * (time.perf_counter() - t0) / max(1, len(prepared))
        verdicts = []
        for i, p in enumerate(prepared):
            verdicts.append(self.policy.decide_input(
                [s for s, h in zip(got[i], p.history, strict=True) if not h],
                [s for s, h in zip(got[i], p.history, strict=True) if h], latency_ms=ms,
                escalated=None if escalated is None else i in escalated))
            if p.unscreened:
                verdicts[-1] = verdicts[-1].model_copy(update={"unscreened": list(p.unscreened)})
        return verdicts

    def _escalate(self, prepared: Sequence[PreparedPrompt], got: list[list[Any]]) -> set[int]:
        """The cascade: every screened text whose stage-1 score escalates is read by stage 2, in the decoded view
        stage 1 scored highest, and its score in ``got`` replaced by the cascade's. Returns the prompts escalated."""
        from dataclasses import replace

        from ccguard.cascade import stage2_text

        todo: list[tuple[int, int, str]] = []
        for i, p in enumerate(prepared):
            for k, (s, h) in enumerate(zip(got[i], p.history, strict=True)):
                if self.policy.escalates(self.policy.input_part_score(s.score, h)):
                    todo.append((i, k, stage2_text(p.parts[k], s)))
        if todo:
            s2 = self.stage2.scores([t for _, _, t in todo])
            for (i, k, _), x in zip(todo, s2, strict=True):
                got[i][k] = replace(got[i][k], score=self.policy.cascade_score(got[i][k].score, float(x)))
        return {i for i, _, _ in todo}

    def check_input(self, prompt: Prompt) -> Verdict:
        """Screen one prompt: a string, or chat messages (``Message`` objects or OpenAI-style dicts, whose content
        may be a list of content parts: text parts are screened, and the verdict's ``unscreened`` names the
        others)."""
        return self.check_inputs([prompt])[0]

    async def acheck_input(self, prompt: Prompt) -> Verdict:
        """Async twin of ``check_input``: runs the same core off the event loop."""
        return await asyncio.to_thread(self.check_input, prompt)

    # --- output --------------------------------------------------------------------------------------------
    def _require_output(self) -> Any:
        if self.output_classifier is None:
            raise CcguardError("this guard has no output classifier (train one with `ccguard run`)")
        return self.output_classifier

    def _category(self, prompt: Prompt, response: str) -> str | None:
        # The output head is binary; the input head's category guess on the exchange names the likely harm.
        return self.input_classifier.score([f"{render_prompt(prompt)}\n{response[:2000]}"])[0].category

    def start_stream(self, prompt: Prompt, *, probe: bool = False) -> OutputGate:
        """A fresh ``OutputGate`` for one response to ``prompt`` (one per stream; never shared): feed it text and it
        releases what the policy allows. When the prompt asks for an encoded answer, the gate also screens the
        answer's decoded view. ``probe``: the response comes from the local upstream this guard's probe reads, which
        will feed the gate probe logits (``OutputGate.add_probe``)."""
        from ccguard.views import asks_for_encoding

        text = render_prompt(prompt)
        gate = OutputGate(self._require_output().session(text), self.policy)
        if asks_for_encoding(text):
            gate.decode_every = DECODE_EVERY_CHARS
        if probe and self.probe is not None:
            from ccguard.probes import ProbeTrack

            gate.probe = ProbeTrack(self.probe.spec.window)
            gate.session.use_exact()  # the int8 runtime's margin is set for the classifier alone, not the ensemble
        return gate

    def _output_verdict(self, gate: OutputGate, prompt: Prompt, t0: float) -> Verdict:
        category = self._category(prompt, gate.text) if gate.halted else None
        v = gate.verdict(category=category, latency_ms=1000 * (time.perf_counter() - t0))
        unscreened = unscreened_parts(prompt)
        return v.model_copy(update={"unscreened": unscreened}) if unscreened else v

    async def _screen_items(self, prompt: Prompt, items: AsyncIterable[Any], text_of: Callable[[Any], str],
                            run: _Runner) -> AsyncIterator[tuple[Any, str] | Verdict]:
        """The session loop: feed each item's text to the gate and yield ``(item, newly released text)``; stop
        after the item whose text was flagged. At the end of an unflagged stream, ``(None, rest)`` releases what the
        last chunk held back. The last item is the ``Verdict``. ``run`` executes the model work (inline, or off the
        event loop). Nothing from the flagged chunk's first character on is ever released."""
        t0 = time.perf_counter()
        prompt = _parsed(prompt)
        gate = await run(self.start_stream, prompt)
        released = 0
        async for item in items:
            if text := text_of(item):
                await run(gate.feed, text)
            yield item, gate.text[released : gate.released_chars]
            released = max(released, gate.released_chars)
            if gate.halted:
                break
        if not gate.halted:
            await run(gate.finish)
            if gate.released_chars > released:
                yield None, gate.text[released : gate.released_chars]
        yield await run(self._output_verdict, gate, prompt, t0)

    async def _screen(self, prompt: Prompt, chunks: AsyncIterable[str], run: _Runner) -> AsyncIterator[str | Verdict]:
        async for x in self._screen_items(prompt, chunks, str, run):
            if isinstance(x, Verdict):
                yield x
            elif x[1]:
                yield x[1]

    async def ascreen_items(self, prompt: Prompt, items: AsyncIterable[Any],
                            text_of: Callable[[Any], str]) -> AsyncIterator[tuple[Any, str] | Verdict]:
        """``ascreen_stream`` for a stream of objects that carry text (an SDK's or a framework's chunks):
        yields ``(item, the text of it and of earlier items released now)`` for each item, ``(None, rest)`` once at
        the end of an unflagged stream, and finally the ``Verdict``. The caller re-emits each item with the
        released text in place of its own. Model work runs off the event loop."""
        async for x in self._screen_items(prompt, items, text_of, _threaded):
            yield x

    async def ascreen_stream(self, prompt: Prompt, chunks: AsyncIterable[str]) -> AsyncIterator[str | Verdict]:
        """Yield response text only after its chunk has been scored; stop at the first flagged chunk. The last
        item is the final ``Verdict``. Nothing from the flagged chunk's first character on is ever yielded. Model
        work runs off the event loop."""
        async for item in self._screen(prompt, chunks, _threaded):
            yield item

    def screen_items(self, prompt: Prompt, items: Iterable[Any],
                     text_of: Callable[[Any], str]) -> Iterator[tuple[Any, str] | Verdict]:
        """Sync twin of ``ascreen_items``."""
        return _drive(self._screen_items(prompt, _aiter(items), text_of, _inline))

    def screen_stream(self, prompt: Prompt, chunks: Iterable[str]) -> Iterator[str | Verdict]:
        """Sync twin of ``ascreen_stream`` (the same loop, driven here)."""
        return _drive(self._screen(prompt, _aiter(chunks), _inline))

    def check_output(self, prompt: Prompt, response: str | list[dict[str, Any]]) -> Verdict:
        """Screen a complete response (a string, or OpenAI-style content parts) as if it had been streamed;
        ``stop_char`` says where it would have halted (in the joined text parts)."""
        text, others = content_text(response, where="response")
        *_, verdict = self.screen_stream(prompt, [text])
        return _with_unscreened(verdict, others)

    async def acheck_output(self, prompt: Prompt, response: str | list[dict[str, Any]]) -> Verdict:
        """Async twin of ``check_output``."""
        text, others = content_text(response, where="response")
        items = [item async for item in self.ascreen_stream(prompt, _aiter([text]))]
        return _with_unscreened(items[-1], others)


def _parsed(prompt: Prompt) -> Prompt:
    """A prompt with its messages validated once (dicts become ``Message``; content parts are split)."""
    return prompt if isinstance(prompt, str) else parse_prompt(list(prompt), where="prompt")


def _with_unscreened(verdict: Verdict, response_parts: list[str]) -> Verdict:
    if not response_parts:
        return verdict
    return verdict.model_copy(update={"unscreened": [*verdict.unscreened, *(f"response: {t}" for t in response_parts)]})


_Runner = Callable[..., Awaitable[Any]]


async def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


async def _threaded(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def _aiter(items: Iterable[str]) -> AsyncIterator[str]:
    for item in items:
        yield item


def _drive(agen: AsyncIterator[Any]) -> Iterator[Any]:
    """Run an async generator to completion from sync code, one item at a time, on a private event loop. Inside a
    thread whose event loop is already running (a notebook, an async server), the private loop runs on a helper
    thread instead."""
    try:
        asyncio.get_running_loop()
        busy = True
    except RuntimeError:
        busy = False
    loop = asyncio.new_event_loop()
    pool = ThreadPoolExecutor(1, thread_name_prefix="ccguard-sync") if busy else None

    def step(aw: Awaitable[Any]) -> Any:
        if pool is None:
            return loop.run_until_complete(aw)
        return pool.submit(loop.run_until_complete, aw).result()

    try:
        while True:
            try:
                yield step(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        try:
            step(agen.aclose())
        finally:
            loop.close()
            if pool is not None:
                pool.shutdown()
