"""babeltune.models.anatomy finds the decoder, its layers, the final norm and the LM head the same way
on every architecture babeltune meets: tiny Gemma-3, a PEFT-wrapped model, a Llama-architecture
model, and the real default model."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from babeltune.models.anatomy import decoder_layers, decoder_of, final_norm, lm_head, text_config, unwrap


def tiny_llama(tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def check_anatomy(model: Any, layers: int) -> None:
    base = unwrap(model)
    assert decoder_of(model) is base.model
    assert decoder_layers(model) is base.model.layers and len(decoder_layers(model)) == layers
    assert final_norm(model) is base.model.norm
    assert lm_head(model) is base.lm_head
    assert text_config(model).num_hidden_layers == layers
    # The decoder body gives the hidden states the head turns into the model's own logits.
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        hidden = decoder_of(model)(input_ids=ids).last_hidden_state
        logits = model(input_ids=ids).logits
    head_logits = lm_head(model)(hidden)
    softcap = getattr(text_config(model), "final_logit_softcapping", None)
    if softcap:
        head_logits = torch.tanh(head_logits / softcap) * softcap
    torch.testing.assert_close(head_logits, logits)


def test_tiny_gemma(tiny_lm: Any) -> None:
    assert unwrap(tiny_lm) is tiny_lm
    check_anatomy(tiny_lm, layers=2)


def test_peft_wrapped(tiny_lm: Any) -> None:
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(tiny_lm, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert unwrap(wrapped) is wrapped.get_base_model() is not wrapped
    check_anatomy(wrapped, layers=2)


def test_llama_architecture(tiny_tok: Any) -> None:
    model = tiny_llama(tiny_tok)
    check_anatomy(model, layers=3)
    assert lm_head(model).weight is not model.model.embed_tokens.weight  # untied head


def test_missing_parts_are_named() -> None:
    class NoDecoder(torch.nn.Module):
        pass

    with pytest.raises(ValueError, match="NoDecoder: cannot find its decoder"):
        decoder_of(NoDecoder())
    assert lm_head(NoDecoder()) is None


@pytest.mark.integration
def test_default_model() -> None:
    from babeltune.models import load_model

    loaded = load_model("gemma-3-270m")
    check_anatomy(loaded.model, layers=18)
    assert lm_head(loaded.model).weight is decoder_of(loaded.model).embed_tokens.weight  # tied
