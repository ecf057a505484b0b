"""A KV cache that appends in place instead of re-concatenating every step.

transformers' `DynamicCache` grows each layer with `torch.cat([past, new])`: every generated token
copies the whole cache of every layer, so the copying grows with the response (at 512 new tokens and
batch 32 it costs about as much as the model's own arithmetic on a CPU). These layers write new states
into a buffer with spare room (doubled when full, so copying is amortised O(1) per token) and hand the
attention a view of the filled part. The sliding-window variant keeps the last `window - 1` states,
as transformers' own sliding layer does, and compacts its buffer only when it fills up.

They subclass transformers' layers and keep their mask arithmetic (`get_mask_sizes`), so the attention
sees exactly the keys and values it would see with `DynamicCache` (tested against `model.generate`).
Layers of any other kind are left as transformers builds them.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

_MIN_CAPACITY = 64


class _Buffer:
    """Keys and values of one layer: (B, H, capacity, D) tensors, filled in [start, end)."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.start = 0
        self.end = 0

    def append(self, keys: torch.Tensor, values: torch.Tensor, keep: int | None) -> None:
        """Write (B, H, n, D) new states after the filled part; on overflow keep the last `keep` states
        (all if None) in a buffer twice as large as needed."""
        n = keys.shape[-2]
        if self.keys is None or self.values is None or self.end + n > self.keys.shape[-2]:
            first = self.start if keep is None else max(self.start, self.end - keep)
            live = self.end - first
            capacity = max(_MIN_CAPACITY, 2 * (live + n))
            new_keys = keys.new_empty((*keys.shape[:2], capacity, keys.shape[-1]))  # (B, H, C, D)
            new_values = values.new_empty((*values.shape[:2], capacity, values.shape[-1]))
            if live and self.keys is not None and self.values is not None:
                new_keys[:, :, :live] = self.keys[:, :, first:self.end]
                new_values[:, :, :live] = self.values[:, :, first:self.end]
            self.keys, self.values, self.start, self.end = new_keys, new_values, 0, live
        self.keys[:, :, self.end:self.end + n] = keys
        self.values[:, :, self.end:self.end + n] = values
        self.end += n

    def view(self, first: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.keys is not None and self.values is not None
        return self.keys[:, :, first:self.end], self.values[:, :, first:self.end]

    def select(self, indices: torch.Tensor) -> None:
        if self.keys is not None and self.values is not None:
            self.keys, self.values = self.keys[indices], self.values[indices]


class AppendLayer(DynamicLayer):
    """A full-attention cache layer that appends in place."""

    _layer_type = None  # never registered as transformers' default for a layer type

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.buffer = _Buffer()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.buffer.append(key_states, value_states, keep=None)
        self.keys, self.values = self.buffer.view(self.buffer.start)
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.buffer.select(indices)
        if self.buffer.keys is not None:
            self.keys, self.values = self.buffer.view(self.buffer.start)


class AppendSlidingLayer(DynamicSlidingWindowLayer):
    """A sliding-window cache layer that appends in place; attention sees the last window - 1 states
    plus the new ones, as with `DynamicSlidingWindowLayer`."""

    _layer_type = None

    def __init__(self, sliding_window: int, **kwargs: Any) -> None:
        super().__init__(sliding_window=sliding_window)
        self.buffer = _Buffer()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        self.cumulative_length += n
        keep = self.sliding_window - 1
        self.buffer.append(key_states, value_states, keep=keep)
        visible = self.buffer.view(max(self.buffer.start, self.buffer.end - n - keep))  # past window + new
        self.keys, self.values = self.buffer.view(max(self.buffer.start, self.buffer.end - keep))
        return visible

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.buffer.select(indices)
        if self.buffer.keys is not None:
            self.keys, self.values = self.buffer.view(max(self.buffer.start, self.buffer.end - self.sliding_window + 1))


def appending_cache(config: Any) -> DynamicCache:
    """A `DynamicCache` for `config` whose plain and sliding-window layers append in place."""
    cache = DynamicCache(config=config)
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            cache.layers[i] = AppendLayer()
        elif type(layer) is DynamicSlidingWindowLayer:
            cache.layers[i] = AppendSlidingLayer(sliding_window=layer.sliding_window)
    return cache
