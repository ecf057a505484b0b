"""Batched decoding and the local backend, on the tiny model: equal to transformers' generate, stops
at the end of turn, drops finished rows without disturbing the others, seeded sampling."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from babeltune.data.records import Message
from babeltune.generate import DecodingSettings, GenerationRequest, LocalBackend, generate_token_ids
from babeltune.generate.decoding import apply_repetition_penalty, filter_top_k_top_p, left_pad, length_sorted_batches
from babeltune.models import get_template, render_prompt

pytestmark = pytest.mark.usefixtures("one_torch_thread")


PROMPTS = ["The quick brown fox", "Kuidas sul täna läheb? " * 3, "敏捷的棕色狐狸", "Habari za leo? " * 2, "Как дела"]


def _ids(tok: Any) -> list[list[int]]:
    return [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]


def _eot(tok: Any) -> int:
    return int(tok.convert_tokens_to_ids("<end_of_turn>"))


def _hf_greedy(model: Any, ids: list[int], n: int, penalty: float, stop: int) -> list[int]:
    out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=n, do_sample=False, repetition_penalty=penalty, eos_token_id=[stop],
                         pad_token_id=0)
    return list(out[0, len(ids):].tolist())


@pytest.mark.parametrize("penalty", [1.0, 1.2])
def test_batched_greedy_equals_transformers_generate_at_batch_1(tiny_tok: Any, tiny_lm: Any, penalty: float) -> None:
    prompts = _ids(tiny_tok)
    settings = DecodingSettings(max_new_tokens=12, repetition_penalty=penalty)
    ours = {g.index: g.token_ids for g in generate_token_ids(
        tiny_lm, prompts, settings, stop_ids=[_eot(tiny_tok)], pad_id=tiny_tok.pad_token_id, batch_size=3)}
    assert sorted(ours) == list(range(len(prompts)))
    for i, ids in enumerate(prompts):
        assert ours[i] == _hf_greedy(tiny_lm, ids, 12, penalty, _eot(tiny_tok)), f"prompt {i}"


class ForcedStop(torch.nn.Module):
    """Wraps a model; forces `stop_id` once a row's sequence (prompt + generated) reaches `total` tokens,
    so rows of different prompt lengths stop at different steps."""

    def __init__(self, model: Any, stop_id: int, total: int) -> None:
        super().__init__()
        self.inner, self.stop_id, self.total = model, stop_id, total
        self.config = model.config
        self.batch_sizes: list[int] = []

    def forward(self, **kwargs: Any) -> Any:
        out = self.inner(**kwargs)
        logits = out.logits.clone()
        self.batch_sizes.append(logits.shape[0])
        lengths = kwargs["attention_mask"].sum(-1)  # (B,) tokens so far, the current one included
        logits[lengths >= self.total - 1, -1, self.stop_id] = 1e4
        return SimpleNamespace(logits=logits)


def test_rows_stop_at_end_of_turn_and_leave_the_batch(tiny_tok: Any, tiny_lm: Any) -> None:
    prompts = _ids(tiny_tok)
    stop = _eot(tiny_tok)
    total = max(len(p) for p in prompts) + 4
    forced = ForcedStop(tiny_lm, stop, total)
    settings = DecodingSettings(max_new_tokens=40, repetition_penalty=1.0)
    batched = {g.index: g for g in generate_token_ids(forced, prompts, settings, stop_ids=[stop], pad_id=0,
                                                      batch_size=len(prompts))}
    for i, ids in enumerate(prompts):
        g = batched[i]
        assert g.finish_reason == "stop"
        assert g.token_ids[-1] == stop and stop not in g.token_ids[:-1]
        assert len(g.token_ids) == total - len(ids)
        assert g.prompt_tokens == len(ids)
    # Rows left the batch as they finished: the batch shrank during decoding.
    assert forced.batch_sizes[0] == len(prompts) and min(forced.batch_sizes) < len(prompts)
    # Dropping finished rows does not change the others: same tokens as one prompt at a time.
    single = {g.index: g.token_ids for g in generate_token_ids(ForcedStop(tiny_lm, stop, total), prompts, settings,
                                                               stop_ids=[stop], pad_id=0, batch_size=1)}
    assert single == {i: g.token_ids for i, g in batched.items()}


def test_max_new_tokens_ends_with_length(tiny_tok: Any, tiny_lm: Any) -> None:
    out = list(generate_token_ids(tiny_lm, _ids(tiny_tok)[:2], DecodingSettings(max_new_tokens=5), stop_ids=[],
                                  pad_id=0, batch_size=2))
    assert [len(g.token_ids) for g in out] == [5, 5]
    assert {g.finish_reason for g in out} == {"length"}


def test_sampling_is_seeded_per_prompt_not_per_batch(tiny_tok: Any, tiny_lm: Any) -> None:
    prompts = _ids(tiny_tok)
    settings = DecodingSettings(max_new_tokens=10, temperature=1.0, repetition_penalty=1.0)
    seeds = [11, 12, 13, 14, 15]

    def run(batch: int, seeds: list[int]) -> dict[int, list[int]]:
        return {g.index: g.token_ids for g in generate_token_ids(tiny_lm, prompts, settings, stop_ids=[], pad_id=0,
                                                                 batch_size=batch, seeds=seeds)}

    first = run(5, seeds)
    assert run(2, seeds) == first  # batching does not change a sampled response
    assert run(5, [s + 100 for s in seeds]) != first  # other seeds, other samples
    greedy = {g.index: g.token_ids for g in generate_token_ids(
        tiny_lm, prompts, DecodingSettings(max_new_tokens=10, repetition_penalty=1.0), stop_ids=[], pad_id=0)}
    top1 = {g.index: g.token_ids for g in generate_token_ids(
        tiny_lm, prompts, DecodingSettings(max_new_tokens=10, temperature=0.7, top_k=1, repetition_penalty=1.0),
        stop_ids=[], pad_id=0, seeds=seeds)}
    assert top1 == greedy


def test_logit_processing_by_hand() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    seen = torch.tensor([[0, 1, 1, 0]])  # repeated ids are penalised once
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -2.0, 0.5, 3.0]]
    probs_logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = filter_top_k_top_p(probs_logits, top_k=0, top_p=0.7).isfinite().tolist()
    assert kept == [[True, True, False, False]]  # 0.5 < 0.7, 0.5 + 0.3 reaches it
    assert filter_top_k_top_p(probs_logits, top_k=1, top_p=1.0).isfinite().tolist() == [[True, False, False, False]]
    assert filter_top_k_top_p(probs_logits, top_k=0, top_p=0.1).isfinite().sum() == 1  # the best always stays


def test_left_padding_and_length_sorting() -> None:
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert length_sorted_batches([3, 9, 1, 9, 4], 2) == [[1, 3], [4, 0], [2]]
    with pytest.raises(ValueError, match="empty prompt"):
        left_pad([[]], 0)


def test_local_backend_renders_with_the_training_template(tiny_tok: Any, tiny_lm: Any) -> None:
    backend = LocalBackend(tiny_lm, tiny_tok, batch_size=2)
    requests = [GenerationRequest(f"r{i}", (Message("user", p),)) for i, p in enumerate(PROMPTS[:3])]
    results = {r.id: r for r in backend.generate(requests, DecodingSettings(max_new_tokens=6))}
    template = get_template(tiny_tok)
    assert backend.stop_ids(DecodingSettings()) == [*template.stop_token_ids(tiny_tok), tiny_tok.eos_token_id]
    for req in requests:
        res = results[req.id]
        assert res.prompt_tokens == len(render_prompt(tiny_tok, template, req.messages))
        assert res.completion_tokens == 6 and res.finish_reason == "length"
        assert isinstance(res.text, str) and res.error is None
    ident = backend.identity()
    assert ident["backend"] == "local" and ident["dtype"] == "float32" and ident["template"] == "gemma"
    assert ident["fingerprint"] == LocalBackend(tiny_lm, tiny_tok).identity()["fingerprint"]


def test_local_and_vllm_identities_share_one_shape(tiny_tok: Any, tiny_lm: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Both backends describe themselves through one helper: the same keys in the same order, vLLM adding
    its engine (checked without vLLM: a stand-in engine and version)."""
    from babeltune.generate import vllm as vllm_backend

    monkeypatch.setattr(vllm_backend, "vllm_version", lambda: "0.0-test")
    llm = SimpleNamespace(llm_engine=SimpleNamespace(model_config=SimpleNamespace(dtype=torch.bfloat16)))
    engine = vllm_backend._Engine(llm=llm, model_path="tiny")
    served = vllm_backend.VLLMBackend(engine, tiny_tok, model_name="tiny", fingerprint="abc", template="gemma")
    assert served.identity() == {"backend": "vllm", "engine": "vllm 0.0-test", "model": "tiny", "fingerprint": "abc",
                                 "dtype": "bfloat16", "template": "gemma"}
    assert list(served.identity()) == ["backend", "engine", "model", "fingerprint", "dtype", "template"]
    local = LocalBackend(tiny_lm, tiny_tok, template="gemma")
    local.identity_extra["steering"] = {"mode": "add"}
    assert list(local.identity()) == ["backend", "model", "fingerprint", "dtype", "template", "steering"]
    assert local.identity()["backend"] == "local" and local.identity()["steering"] == {"mode": "add"}


def test_settings_are_validated() -> None:
    for bad in ({"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"top_k": -1}, {"repetition_penalty": 0}):
        with pytest.raises(ValueError):
            DecodingSettings(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("penalty", [1.0, 1.2])
@pytest.mark.parametrize("candidates", [1, 2, 64])
def test_bf16_head_picks_the_float32_heads_tokens(tiny_tok: Any, tiny_lm: Any, penalty: float,
                                                  candidates: int) -> None:
    from babeltune.generate.fasthead import Bf16GreedyHead

    prompts = _ids(tiny_tok)
    settings = DecodingSettings(max_new_tokens=16, repetition_penalty=penalty)
    head = Bf16GreedyHead(tiny_lm, candidates=candidates)

    def run(h: Any) -> dict[int, list[int]]:
        return {g.index: g.token_ids for g in generate_token_ids(tiny_lm, prompts, settings, stop_ids=[], pad_id=0,
                                                                 batch_size=3, head=h)}

    assert run(head) == run(None)
    assert head.decided == 16 * len(prompts)
    if candidates == 1:  # the best candidate can never be certified against itself: always the full head
        assert head.fallbacks == head.decided
    if candidates == 2:  # both paths taken: certified rows and full-head rows
        assert 0 < head.fallbacks < head.decided


def test_bf16_head_follows_weight_changes_and_skips_hooked_heads(tiny_tok: Any) -> None:
    from babeltune.generate.fasthead import split_head
    from babeltune.testing import tiny_model

    model = tiny_model(tiny_tok, seed=3)
    backend = LocalBackend(model, tiny_tok, bf16_head="on")
    first = backend.greedy_head()
    assert first is not None and backend.greedy_head() is first
    requests = [GenerationRequest("a", (Message("user", PROMPTS[0]),))]
    settings = DecodingSettings(max_new_tokens=6)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(-1.0)  # an in-place update, as a training step makes
    assert backend.greedy_head() is not first
    on = next(iter(backend.generate(requests, settings))).text
    off = next(iter(LocalBackend(model, tiny_tok, bf16_head="off").generate(requests, settings))).text
    assert on == off
    handle = model.get_output_embeddings().register_forward_hook(lambda *a: None)
    assert split_head(model) is None and LocalBackend(model, tiny_tok).greedy_head() is None
    with pytest.raises(ValueError, match="bf16_head=on"):
        LocalBackend(model, tiny_tok, bf16_head="on").greedy_head()
    handle.remove()


def test_append_cache_equals_dynamic_cache_and_generate_across_sliding_windows(tiny_tok: Any) -> None:
    """Prompts and responses longer than a sliding window of 8: the in-place cache must show attention
    exactly what DynamicCache shows it, through buffer growth, compaction and dropped rows."""
    from babeltune.testing import tiny_model

    model = tiny_model(tiny_tok, layers=3, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                       sliding_window=8)
    prompts = _ids(tiny_tok)
    settings = DecodingSettings(max_new_tokens=70)  # past the first buffer's capacity (64)
    stop = _eot(tiny_tok)
    forced = ForcedStop(model, stop, total=60)  # rows stop at different steps and leave the batch

    def run(m: Any, append: bool) -> dict[int, list[int]]:
        return {g.index: g.token_ids for g in generate_token_ids(m, prompts, settings, stop_ids=[stop], pad_id=0,
                                                                 batch_size=3, append_cache=append)}

    assert run(forced, True) == run(forced, False)
    appended = run(model, True)
    assert appended == run(model, False)
    for i, ids in enumerate(prompts[:2]):
        assert appended[i] == _hf_greedy(model, ids, 70, 1.2, stop)
