"""Tiny models and tokenizers for fast tests (and for users' own tests of babeltune pipelines).

`tiny_tokenizer()` trains a byte-level BPE tokenizer in a fraction of a second on text in many
scripts, with Gemma's control tokens; `tiny_model(tokenizer)` builds a randomly initialised Gemma-3
architecture a few layers deep from a config. Nothing is downloaded.
"""

from __future__ import annotations

import functools
from typing import Any

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog. How are you today?",
    "El rápido zorro marrón salta sobre el perro perezoso. ¿Cómo estás hoy?",
    "Il veloce volpe marrone salta sopra il cane pigro. Come stai oggi?",
    "Rychlá hnědá liška skáče přes líného psa. Jak se dnes máš?",
    "Kiire pruun rebane hüppab üle laisa koera. Kuidas sul täna läheb?",
    "Nopea ruskea kettu hyppää laiskan koiran yli. Mitä kuuluu tänään?",
    "Быстрая коричневая лиса прыгает через ленивую собаку. Как дела сегодня?",
    "Mbweha mwepesi wa kahawia anaruka juu ya mbwa mvivu. Habari za leo?",
    "الثعلب البني السريع يقفز فوق الكلب الكسول. كيف حالك اليوم؟",
    "השועל החום המהיר קופץ מעל הכלב העצלן. מה שלומך היום?",
    "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है। आज आप कैसे हैं?",
    "敏捷的棕色狐狸跳过了懒狗。你今天好吗？",
    "<html><body><h1>Title</h1></body></html> # Heading - item 1. 2. → ->",
]


@functools.lru_cache(maxsize=4)
def _tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return str(tok.to_str())


def tiny_tokenizer(vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer (any script round-trips) with Gemma's special tokens, no chat template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
        bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        padding_side="left",
    )


def tiny_config(tokenizer: Any, layers: int = 2, hidden: int = 32, **overrides: Any) -> Any:
    """A Gemma-3 text config a few layers deep that fits `tokenizer`."""
    from transformers import Gemma3TextConfig

    kwargs: dict[str, Any] = dict(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
        sliding_window=64, layer_types=["full_attention"] * layers,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True, attn_implementation="eager",
    )
    kwargs.update(overrides)
    return Gemma3TextConfig(**kwargs)


def tiny_model(tokenizer: Any, seed: int = 0, **config_overrides: Any) -> Any:
    """A randomly initialised tiny Gemma-3 causal LM (float32, eval mode), deterministic per seed."""
    import torch
    from transformers import Gemma3ForCausalLM

    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(tiny_config(tokenizer, **config_overrides))
    model.eval()
    return model


def tiny_adapter(base_dir: Any, out_dir: Any, seed: int = 1, r: int = 4, scale: float = 5.0) -> Any:
    """Save a LoRA adapter of the tiny model saved in `base_dir` to `out_dir` (its config names
    `base_dir` as the base), with random, visibly output-changing weights drawn from `seed`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    lora = get_peft_model(base, LoraConfig(r=r, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * (scale if "lora_B" in name else 1.0))
    lora.peft_config["default"].base_model_name_or_path = str(base_dir)
    lora.save_pretrained(str(out_dir))
    return out_dir
