"""Scoring and generation at scale: the per-batch scoring every engine shares, and its fan-out over Ray.

Ray is imported lazily (``pip install 'ccguard-classifiers[ray]'``). A job uses the Ray this process already runs, else joins
the cluster ``RAY_ADDRESS`` names (or, as ``ray.init`` does, the latest one started on this machine), else starts a
local instance. On exit it disconnects only if it connected: a local instance it started stops, a cluster it joined
or a Ray the process already ran keeps running. Workers read the guard directory by path, so on a multi-node
cluster it must exist at the same path on every node.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from ccguard.errors import CcguardError
from ccguard.llm.base import Completion, GenerateParams, LLMBackend
from ccguard.records import Message, parse_prompt

ENGINES = ("local", "ray")


def check_engine(engine: str, workers: int) -> None:
    """Fail early, before any model loads, on an unknown engine or a Ray that is not installed."""
    if engine not in ENGINES:
        raise CcguardError(f"must be one of {', '.join(ENGINES)}, not {engine!r}", where="--engine")
    if workers < 1:
        raise CcguardError("must be at least 1", where="--workers")
    if engine == "ray":
        _ray()


def score_batch(guard: Any, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fields scoring adds to each record (``input_*``, and ``output_*`` where it has a response), in order.

    The one scoring path: the local engine calls it in-process, each Ray actor on its share of the batches."""
    prompts = [parse_prompt(r["prompt"], where="prompt") for r in records]
    added = []
    for r, p, v in zip(records, prompts, guard.check_inputs(prompts), strict=True):
        fields: dict[str, Any] = {"input_score": round(v.score, 6), "input_flagged": not v.allowed}
        if r.get("response") is not None:
            ov = guard.check_output(p, r["response"])
            fields.update(output_score=round(ov.score, 6), output_flagged=not ov.allowed, output_stop_char=ov.stop_char)
        added.append(fields)
    return added


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise CcguardError("--engine ray needs Ray: pip install 'ccguard-classifiers[ray]'") from None
    return ray


@contextmanager
def ray_session() -> Iterator[Any]:
    """The ``ray`` module, connected: to a Ray already initialised in this process, to ``RAY_ADDRESS``, or to a
    local instance. Disconnects (stopping a local instance) on exit only if it connected."""
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    address = os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    except ConnectionError as e:
        raise CcguardError(f"cannot reach the Ray cluster ({e})", where="RAY_ADDRESS") from None
    try:
        _quiet_data(ray)
        yield ray
    finally:
        ray.shutdown()


def _quiet_data(ray: Any) -> None:
    # The caller draws its own progress bar and raises Ray's errors itself; Ray Data's bars, banners and console
    # copies of those errors would only interleave with it. Its log file under the Ray session keeps everything.
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    for h in logging.getLogger("ray.data").handlers:
        if not isinstance(h, logging.FileHandler):
            h.setLevel(logging.CRITICAL)


def cpus_per_worker(ray: Any, workers: int) -> float:
    """An even share of the cluster's CPUs per worker: whole CPUs, no more than the largest node has, or a fraction
    of one when there are more workers than CPUs (so every worker still gets scheduled)."""
    total = ray.cluster_resources().get("CPU", 1)
    if total < workers:
        return total / workers
    largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
    return float(max(1, min(int(largest), int(total) // workers)))


def _reraise(e: BaseException) -> NoReturn:
    """Raise the user's error from inside a Ray task error, so the CLI prints its one line; else ``e`` itself."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, CcguardError):
        raise cause from None
    raise e


class _Scorer:
    """A Ray Data callable class: one Guard per actor, loaded once, torch limited to the CPUs Ray gave the actor."""

    def __init__(self, guard_dir: str, runtime: str) -> None:
        import ray
        import torch

        from ccguard.guard import Guard

        self.guard = Guard.load(guard_dir, runtime=runtime)
        # After Guard.load, which sizes torch to every core of the node; this actor has only its share.
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(max(1, int(cpus)))

    def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
        # Each row is one whole scoring batch (see score_on_ray).
        return {"b": rows["b"], "added": [json.dumps(score_batch(self.guard, json.loads(s))) for s in rows["records"]]}


def score_on_ray(
    guard_dir: Path,
    records: Sequence[dict[str, Any]],
    *,
    workers: int = 2,
    batch_size: int = 64,
    runtime: str = "torch",
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """:func:`score_batch`'s fields for every record, in record order, computed by ``workers`` Ray actors.

    Records are validated by the caller; only their prompt and response travel to the actors, as JSON, so the
    fields scoring adds are the local engine's, whatever other columns a record has."""
    # One Ray row per scoring batch, cut exactly as the local engine cuts them: padding, and so the scores under
    # bf16 autocast, depend on which records share a batch, and Ray Data's own blocks would regroup them.
    batches = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
    if not batches:
        return []
    items = [{"b": k, "records": json.dumps([{"prompt": r["prompt"], "response": r.get("response")} for r in chunk],
                                           ensure_ascii=False)} for k, chunk in enumerate(batches)]
    out: list[list[dict[str, Any]] | None] = [None] * len(batches)
    workers = min(workers, len(batches))  # an actor with no batch to score would only load a guard
    with ray_session() as ray:
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        scored = ds.map_batches(
            _Scorer, fn_constructor_kwargs={"guard_dir": str(Path(guard_dir).resolve()), "runtime": runtime}, batch_size=1,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker(ray, workers),
        )
        try:
            for rows in scored.iter_batches(batch_size=None, batch_format="numpy"):
                for k, added in zip(rows["b"], rows["added"], strict=True):
                    chunk = out[int(k)] = json.loads(added)
                    if progress:
                        progress(len(chunk))
        except Exception as e:  # noqa: BLE001 - re-raised, unwrapped where it is a user error
            _reraise(e)
    missing = [k for k, added in enumerate(out) if added is None]
    if missing:
        raise RuntimeError(f"Ray returned no scores for {len(missing)} batches (first: batch {missing[0]})")
    return [a for chunk in out for a in chunk or ()]


class _Generator:
    """A Ray actor holding one copy of a backend. Async, so an HTTP backend keeps many requests in flight."""

    def __init__(self, spec: dict[str, Any], threads: int) -> None:
        from ccguard.llm.base import create_backend
        from ccguard.llm.config import BackendSpec

        s = BackendSpec.model_validate(spec)
        self.backend = create_backend(s.kind, **s.factory_args())
        self.local = s.kind == "local"
        self.threads = threads

    async def generate(self, messages: list[dict[str, Any]], params: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
        if self.local:
            import torch

            # Before every request: a local model sizes torch to the whole node when it loads (on the first one),
            # and this actor has only its share of the node.
            torch.set_num_threads(self.threads)
        msgs = [Message.model_validate(m) for m in messages]
        out = await self.backend.generate(msgs, GenerateParams.model_validate(params), extra)
        return out.model_dump()


class RayFanout(LLMBackend):
    """A backend spread over ``workers`` Ray actors, each with its own copy of ``spec``'s backend; each request goes
    to the least busy one. It sits under :class:`~ccguard.llm.client.LLMClient`, so the request cache, the meter
    and the job journal stay in this process and work as they do for the backend alone. It serves ``generate``
    only (jobs never stream), and needs a live Ray connection (:func:`ray_session`) for as long as it is used."""

    name = "ray"

    def __init__(self, spec: Any, workers: int = 2) -> None:
        ray = _ray()
        self.model = spec.model
        # Only a local model computes; an API client waits on the network and needs no reserved core.
        cpus = cpus_per_worker(ray, workers) if spec.kind == "local" else 0
        actor = ray.remote(num_cpus=cpus)(_Generator)
        self._actors = [actor.remote(spec.model_dump(), max(1, int(cpus))) for _ in range(workers)]
        self._busy = [0] * workers

    async def generate(
        self, messages: Sequence[Message], params: GenerateParams | None = None, extra: dict[str, Any] | None = None
    ) -> Completion:
        k = self._busy.index(min(self._busy))
        self._busy[k] += 1
        try:
            raw = await self._actors[k].generate.remote(
                [m.model_dump() for m in messages], (params or GenerateParams()).model_dump(), extra)
        except Exception as e:  # noqa: BLE001 - re-raised, unwrapped where it is a user error
            _reraise(e)
        finally:
            self._busy[k] -= 1
        return Completion.model_validate(raw)
