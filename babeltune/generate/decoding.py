"""Batched autoregressive decoding over token ids: the engine behind the local backend and the server.

Why not `model.generate`: on a CPU the cost per step is the batch's matrix products, so six things
matter and `generate` does none of them by default:

1. prompts are sorted by length before batching, so left padding wastes little;
2. a sequence that has stopped leaves the batch at once (its rows are dropped from the KV cache),
   instead of being computed until the longest sequence of the batch ends;
3. only the last position's logits are computed (`logits_to_keep=1`): with a 262k-token vocabulary
   the full-prompt logits of the prefill would cost more than the rest of the model;
4. the KV cache appends in place (`kvcache.py`) instead of re-concatenating every layer every step;
5. greedy tokens of a float32 model can be picked by an exact bfloat16 LM head (`fasthead.py`);
6. the repetition penalty touches only the tokens seen (gather/scatter), not the whole vocabulary.

Each step processes the logits as transformers does (repetition penalty, then temperature, top-k,
top-p), so greedy decoding at batch 1 reproduces `model.generate`'s tokens (tested). Sampling uses
one generator per prompt, seeded from the prompt's id, so a sampled response does not depend on the
batch it landed in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from babeltune.generate.settings import DecodingSettings

if TYPE_CHECKING:
    import torch


@dataclass
class GeneratedIds:
    """The new tokens of one prompt."""

    index: int
    """Position of the prompt in the input sequence."""
    token_ids: list[int]
    """Generated ids, the stop token included when the sequence stopped."""
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (so the peak memory shows early)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def generate_token_ids(
    model: Any,
    prompts: Sequence[Sequence[int]],
    settings: DecodingSettings,
    *,
    stop_ids: Sequence[int],
    pad_id: int,
    batch_size: int = 32,
    seeds: Sequence[int] | None = None,
    head: Any = None,
    append_cache: bool = True,
) -> Iterator[GeneratedIds]:
    """Generate from every prompt (token ids, already rendered), yielding each as soon as it ends.

    `head`: a `Bf16GreedyHead` of `model` to pick greedy tokens with (ignored when sampling).
    `append_cache`: use babeltune's in-place KV cache (`kvcache.py`) instead of transformers' DynamicCache.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError("seeds must give one seed per prompt")
    for batch in length_sorted_batches([len(p) for p in prompts], batch_size):
        yield from _generate_batch(
            model, [prompts[i] for i in batch], batch, settings, stop_ids, pad_id,
            [seeds[i] for i in batch] if seeds is not None else None,
            head if settings.greedy else None,
            append_cache,
        )


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts into (input_ids, attention_mask), both (B, L)."""
    import torch

    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        if not ids:
            raise ValueError("cannot generate from an empty prompt")
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids):] = 1
    return input_ids, attention_mask


def _generate_batch(
    model: Any,
    prompts: list[Sequence[int]],
    indices: list[int],
    settings: DecodingSettings,
    stop_ids: Sequence[int],
    pad_id: int,
    seeds: list[int] | None,
    head: Any,
    append_cache: bool,
) -> Iterator[GeneratedIds]:
    import torch
    from transformers import DynamicCache

    from babeltune.generate.kvcache import appending_cache

    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad(prompts, pad_id)  # (B, L), (B, L)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, L): pads sit at 0, as in generate
    cache = appending_cache(model.config) if append_cache else DynamicCache(config=model.config)
    live = list(range(len(prompts)))  # batch row -> position in `prompts`
    generated: list[list[int]] = [[] for _ in prompts]
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    generators = _generators(seeds, device) if not settings.greedy else None

    # `scores` are the last position's logits (B, V), or its hidden states (B, D) when `head` decides.
    scores = _forward(model, head, input_ids, attention_mask, position_ids, cache)
    seen = _seen_ids(prompts, device) if settings.repetition_penalty != 1.0 else None  # (B, S)
    next_pos = position_ids[:, -1] + 1  # (B,)
    for step in range(settings.max_new_tokens):
        if head is not None:
            tokens = head.greedy(scores, seen, settings.repetition_penalty)  # (B,)
        else:
            tokens = _next_tokens(scores.float(), settings, seen, generators, live)  # (B,)
        if seen is not None:
            seen = torch.cat([seen, tokens[:, None]], dim=-1)  # (B, S+1)
        for row, token in enumerate(tokens.tolist()):
            generated[live[row]].append(token)
        stopped = torch.isin(tokens, stops).tolist()  # (B,)
        last_step = step == settings.max_new_tokens - 1
        done = [row for row in range(len(live)) if last_step or stopped[row]]
        for row in done:
            i = live[row]
            yield GeneratedIds(indices[i], generated[i], "stop" if stopped[row] else "length", len(prompts[i]))
        if last_step or len(done) == len(live):
            return
        if done:  # drop finished rows from every tensor of the batch, the KV cache included
            finished = set(done)
            keep = [row for row in range(len(live)) if row not in finished]
            keep_t = torch.tensor(keep, dtype=torch.long, device=device)
            cache.batch_select_indices(keep_t)
            tokens, attention_mask, next_pos = tokens[keep_t], attention_mask[keep_t], next_pos[keep_t]
            seen = seen[keep_t] if seen is not None else None
            generators = [generators[row] for row in keep] if generators is not None else None
            live = [live[row] for row in keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(live), 1))], dim=-1)  # (B, T+1)
        scores = _forward(model, head, tokens[:, None], attention_mask, next_pos[:, None], cache)
        next_pos = next_pos + 1


def _forward(model: Any, head: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             position_ids: torch.Tensor, cache: Any) -> torch.Tensor:
    """Run the model on new tokens (B, T), extending `cache`: the last position's logits (B, V), or with
    `head` the decoder's last hidden states (B, D).

    Inference mode is entered per call, never across a `yield`, so it cannot leak into the caller.
    """
    import torch

    if head is not None:
        return head.hidden(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                           past_key_values=cache, use_cache=True)
    with torch.inference_mode():
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    past_key_values=cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1, :]


def _generators(seeds: list[int] | None, device: torch.device) -> list[torch.Generator]:
    if seeds is None:
        raise ValueError("sampling needs one seed per prompt")
    import torch

    return [torch.Generator(device=device).manual_seed(seed) for seed in seeds]


def _seen_ids(prompts: list[Sequence[int]], device: torch.device) -> torch.Tensor:
    """(B, S) ids of the tokens each prompt contains, for the repetition penalty. Rows are padded by
    repeating their first token (padding is not a token the prompt contains)."""
    import torch

    width = max(len(p) for p in prompts)
    return torch.tensor([list(p) + [p[0]] * (width - len(p)) for p in prompts], dtype=torch.long, device=device)


def penalise(values: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty (as transformers applies it): positive logits / p, negative ones * p."""
    import torch

    return torch.where(values > 0, values / penalty, values * penalty)


def apply_repetition_penalty(logits: torch.Tensor, seen_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Penalise the tokens in `seen_ids` (B, S) in logits (B, V); repeated ids are penalised once.

    Sparse (gather, penalise, scatter): O(B*S) work instead of O(B*V) with a 262k vocabulary.
    """
    return logits.scatter(1, seen_ids, penalise(logits.gather(1, seen_ids), penalty))


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k and outside the top-p nucleus to -inf; (B, V) -> (B, V)."""
    import torch

    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # probability mass of the better tokens
        remove_sorted = before >= top_p  # the best token always stays (its `before` is 0)
        remove = remove_sorted.scatter(1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def _next_tokens(
    logits: torch.Tensor,
    settings: DecodingSettings,
    seen: torch.Tensor | None,
    generators: list[torch.Generator] | None,
    live: list[int],
) -> torch.Tensor:
    """Pick one token per row from (B, V) float logits; returns (B,) ids."""
    import torch

    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, settings.repetition_penalty)
    if settings.greedy:
        return logits.argmax(-1)
    assert generators is not None
    logits = filter_top_k_top_p(logits / settings.temperature, settings.top_k, settings.top_p)
    probs = logits.softmax(-1)  # (B, V)
    picks = [torch.multinomial(probs[row], 1, generator=generators[row]) for row in range(len(live))]
    return torch.cat(picks)
