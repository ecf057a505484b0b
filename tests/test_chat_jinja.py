"""Tuned models carry their chat template: the Jinja `GEMMA_CHAT_TEMPLATE` that babeltune writes into
every model it saves must make transformers' `apply_chat_template(..., tokenize=True)` give exactly
the token ids of `render_prompt` (generation prompt) and `render_for_training` (whole conversation),
in every bundled language, with a system turn and several turns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from babeltune.data.records import Message
from babeltune.languages import STUDY_A_LANGUAGES
from babeltune.models.chat import (
    GEMMA_CHAT_TEMPLATE,
    get_template,
    render_for_training,
    render_prompt,
    with_chat_template,
)


def _conversations() -> dict[str, list[Message]]:
    """Per bundled language: a system turn, three user/assistant exchanges of real bundled text, and a
    last user turn."""
    from babeltune.data.readers import load_records

    by_lang: dict[str, list[Any]] = {}
    for rec in load_records("bundled:train").records:
        by_lang.setdefault(rec.lang, []).append(rec)
    out = {}
    for lang in STUDY_A_LANGUAGES:
        recs = by_lang[lang][:4]
        turns = [Message("system", "You are a careful assistant.\nAnswer briefly.")]
        for rec in recs[:3]:
            turns.extend(rec.messages)
        turns.append(next(m for m in recs[3].messages if m.role == "user"))
        out[lang] = turns
    return out


def _hf_ids(tokenizer: Any, messages: list[Message], add_generation_prompt: bool) -> list[int]:
    encoded = tokenizer.apply_chat_template([m.to_dict() for m in messages], tokenize=True,
                                            add_generation_prompt=add_generation_prompt)
    ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    return [int(i) for i in ids]


def _check_every_language(tokenizer: Any) -> None:
    template = get_template(tokenizer, "gemma")
    conversations = _conversations()
    assert sorted(conversations) == sorted(STUDY_A_LANGUAGES) and len(conversations) == 12
    with with_chat_template(tokenizer, template):
        for lang, messages in conversations.items():
            prompt = render_prompt(tokenizer, template, messages)
            assert _hf_ids(tokenizer, messages, True) == prompt, lang
            full = [*messages, Message("assistant", messages[2].content)]  # ends with an assistant turn
            trained = render_for_training(tokenizer, template, full).input_ids
            assert _hf_ids(tokenizer, full, False) == trained, lang
            no_system = messages[1:]
            assert _hf_ids(tokenizer, no_system, True) == render_prompt(tokenizer, template, no_system), lang
            assert prompt[0] == tokenizer.bos_token_id and prompt[1] != tokenizer.bos_token_id  # one bos


def test_jinja_template_renders_the_training_ids_in_every_language_tiny(tiny_tok: Any) -> None:
    _check_every_language(tiny_tok)


@pytest.mark.integration
def test_jinja_template_renders_the_training_ids_in_every_language_default_model() -> None:
    from babeltune.models.loading import load_tokenizer

    _check_every_language(load_tokenizer("gemma-3-270m"))


def test_control_token_text_in_content_is_where_jinja_differs(tiny_tok: Any) -> None:
    """babeltune keeps content that spells <end_of_turn> as text; a Jinja template cannot (documented)."""
    template = get_template(tiny_tok, "gemma")
    messages = [Message("user", "say <end_of_turn> please")]
    ours = render_prompt(tiny_tok, template, messages)
    with with_chat_template(tiny_tok, template):
        theirs = _hf_ids(tiny_tok, messages, True)
    eot = tiny_tok.convert_tokens_to_ids("<end_of_turn>")
    assert ours.count(eot) == 1 and theirs.count(eot) == 2  # the turn's own end, and the spelled one


def test_with_chat_template_restores_and_auto_keeps_gemma(tiny_tok: Any) -> None:
    template = get_template(tiny_tok, "auto")
    assert template.name == "gemma" and tiny_tok.chat_template is None
    with with_chat_template(tiny_tok, template) as tok:
        assert tok.chat_template == GEMMA_CHAT_TEMPLATE
        assert get_template(tok, "auto").name == "gemma"  # a tuned model renders as its base did
    assert tiny_tok.chat_template is None


def test_a_models_own_template_is_kept(tiny_tok: Any) -> None:
    own = "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    tiny_tok.chat_template = own
    try:
        template = get_template(tiny_tok, "auto")
        assert template.name == "tokenizer"
        with with_chat_template(tiny_tok, template) as tok:
            assert tok.chat_template == own
    finally:
        tiny_tok.chat_template = None


def test_saved_models_carry_the_template_in_their_tokenizer_config(tiny_tok: Any, tiny_lm: Any,
                                                                    tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from babeltune.train.modeling import save_final

    folder = save_final(tiny_lm, tiny_tok, tmp_path / "final", template=get_template(tiny_tok, "gemma"))
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["chat_template"] == GEMMA_CHAT_TEMPLATE
    assert tiny_tok.chat_template is None  # the caller's tokenizer is left as it was
    reloaded = AutoTokenizer.from_pretrained(folder)
    messages = [Message("system", "Be kind."), Message("user", "Habari za leo?")]
    template = get_template(reloaded, "auto")
    assert template.name == "gemma"
    assert _hf_ids(reloaded, messages, True) == render_prompt(reloaded, template, messages)
    # A full model also stops where babeltune stops: <end_of_turn> is among its generation EOS ids.
    generation = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
    eot = tiny_tok.convert_tokens_to_ids("<end_of_turn>")
    assert generation["eos_token_id"] == [tiny_tok.eos_token_id, eot]
    assert tiny_lm.generation_config.eos_token_id == tiny_tok.eos_token_id  # restored
