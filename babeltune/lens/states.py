"""Hidden states at every layer, for batches of prompts of different lengths.

The state of "layer l" is `hidden_states[l + 1]` of a transformers forward pass: the output of decoder
layer l, except for the last layer, whose state is taken after the final norm (transformers reports it
that way, and so did study C's release). `state_sites(model)` returns the module whose output is each of
those states, so probing, steering and manipulation training all read and write the same tensor.

Padding is handled explicitly: position ids are computed from the attention mask, so a left-padded
prompt gets the same positions (and states) as the prompt alone; the last prompt token is found from the
mask, so right padding works too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from babeltune.models.anatomy import decoder_layers, decoder_of, final_norm

Pooling = Literal["last", "mean"]
PaddingSide = Literal["left", "right"]


def num_layers(model: Any) -> int:
    return len(decoder_layers(model))


def state_sites(model: Any) -> list[torch.nn.Module]:
    """The module whose output is each layer's probed state (see the module docstring)."""
    return [*list(decoder_layers(model))[:-1], final_norm(model)]


def check_layers(layers: Sequence[int], n_layers: int, what: str = "layer") -> list[int]:
    """Validate layer indices (negative ones count from the top); returns them non-negative."""
    out: list[int] = []
    for layer in layers:
        index = layer + n_layers if layer < 0 else layer
        if not 0 <= index < n_layers:
            raise ValueError(f"{what} index {layer} is out of range: the model has {n_layers} layers "
                             f"(valid: 0..{n_layers - 1}, or -1..-{n_layers} from the top)")
        out.append(index)
    return out


@dataclass
class PaddedBatch:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (B, T)
    last_index: torch.Tensor  # (B,) position of each sequence's last real token


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: PaddingSide = "left") -> PaddedBatch:
    """Pad token-id lists to one length; position ids count real tokens only."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("pad_batch needs at least one sequence and no empty sequence")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
    last = mask.shape[1] - 1 - mask.flip(dims=[1]).argmax(dim=1)  # (B,)
    return PaddedBatch(ids, mask, positions, last)


def batch_states(model: Any, batch: PaddedBatch, pool: Pooling = "last") -> torch.Tensor:
    """States of one padded batch at every layer, pooled per sequence: (L, B, D).

    Gradients flow when called outside `torch.no_grad()` (manipulation training uses this)."""
    device = next(model.parameters()).device
    out = decoder_of(model)(
        input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
        position_ids=batch.position_ids.to(device), output_hidden_states=True, use_cache=False,
    )
    hidden = torch.stack(out.hidden_states[1:])  # (L, B, T, D): embeddings dropped
    return pool_states(hidden, batch, pool)


def pool_states(hidden: torch.Tensor, batch: PaddedBatch, pool: Pooling) -> torch.Tensor:
    """(L, B, T, D) -> (L, B, D): the last real token, or the mean over real tokens."""
    if pool == "last":
        index = batch.last_index.to(hidden.device)
        return hidden[:, torch.arange(hidden.shape[1], device=hidden.device), index]  # (L, B, D)
    mask = batch.attention_mask.to(hidden.device, hidden.dtype)[None, :, :, None]  # (1, B, T, 1)
    return (hidden * mask).sum(dim=2) / mask.sum(dim=2)


def final_state(model: Any, batch: PaddedBatch, pool: Pooling = "last") -> torch.Tensor:
    """The top layer's pooled state only, (B, D)."""
    return final_states(model, batch, [pool])[pool]


def final_states(model: Any, batch: PaddedBatch, pools: Sequence[Pooling]) -> dict[Pooling, torch.Tensor]:
    """The top layer's state pooled each way of `pools` from one forward pass, each (B, D): what
    manipulation training's losses read."""
    device = next(model.parameters()).device
    out = decoder_of(model)(
        input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
        position_ids=batch.position_ids.to(device), use_cache=False,
    )
    return {pool: pool_states(out.last_hidden_state[None], batch, pool)[0] for pool in pools}


@torch.no_grad()
def collect_states(
    model: Any, sequences: Sequence[Sequence[int]], pad_id: int, *, pool: Pooling = "last",
    batch_size: int = 16, padding_side: PaddingSide = "left",
) -> torch.Tensor:
    """Pooled states of every sequence at every layer, float32 on CPU: (L, N, D).

    Sequences are sorted by length before batching (less padding), and put back in order."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    chunks: list[torch.Tensor] = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = pad_batch([sequences[i] for i in rows], pad_id, padding_side)
        chunks.append(batch_states(model, batch, pool).float().cpu())
    states = torch.cat(chunks, dim=1)  # (L, N, D) in length order
    result = torch.empty_like(states)
    result[:, torch.tensor(order)] = states
    return result
