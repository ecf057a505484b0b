"""Where the parts of a causal LM are: the one place babeltune looks them up.

Training (the fused loss, the FLOP count), generation (the bfloat16 greedy head) and Lens (states,
steering, manipulation training) all need the decoder body, its layers, its final norm and the LM head
of a transformers model that may be wrapped by PEFT. Every architecture transformers ships with
`get_decoder()` / `get_output_embeddings()` (Gemma, Llama, Qwen, Mistral, ...) is read the same way.
"""

from __future__ import annotations

from typing import Any

import torch


def unwrap(model: Any) -> Any:
    """The plain transformers model under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_of(model: Any) -> Any:
    """The transformer body (embeddings, layers, final norm; no LM head): it returns hidden states."""
    base = unwrap(model)
    get_decoder = getattr(base, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else getattr(base, "model", None)
    if decoder is None:
        raise ValueError(f"{type(base).__name__}: cannot find its decoder (no get_decoder() or .model)")
    return decoder


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The decoder's layers, bottom to top."""
    layers: torch.nn.ModuleList = _decoder_part(model, "layers", "cannot find its decoder layers (expected .layers)")
    return layers


def final_norm(model: Any) -> torch.nn.Module:
    """The norm applied to the top layer's output before the LM head."""
    norm: torch.nn.Module = _decoder_part(model, "norm", "no final norm (.norm) found")
    return norm


def _decoder_part(model: Any, attribute: str, missing: str) -> Any:
    """The decoder's `attribute`; a ValueError naming the decoder's class and `missing` when it has none."""
    decoder = decoder_of(model)
    part = getattr(decoder, attribute, None)
    if part is None:
        raise ValueError(f"{type(decoder).__name__}: {missing}")
    return part


def lm_head(model: Any) -> Any:
    """The LM head module (None if the model has none)."""
    get_head = getattr(unwrap(model), "get_output_embeddings", None)
    return get_head() if callable(get_head) else None


def text_config(model: Any) -> Any:
    """The config that describes the language model (a multimodal config's `text_config`)."""
    config = unwrap(model).config
    return getattr(config, "text_config", config)
