from __future__ import annotations

import pytest

from babeltune.data import Message
from babeltune.models import IGNORE_INDEX, RenderError, get_template, render_for_training, render_prompt
from tests.conftest import SAMPLE_TEXT


def conv(prompt: str, response: str, system: str | None = None) -> list[Message]:
    msgs = [Message("system", system)] if system else []
    return [*msgs, Message("user", prompt), Message("assistant", response)]


@pytest.mark.parametrize("lang", sorted(SAMPLE_TEXT))
def test_one_rendered_sample_per_language(tiny_tok, lang: str) -> None:
    """Every script renders, masks only the response + <end_of_turn>, and decodes back exactly."""
    prompt, response = SAMPLE_TEXT[lang]
    template = get_template(tiny_tok)
    assert template.name == "gemma"
    ex = render_for_training(tiny_tok, template, conv(prompt, response))
    text = tiny_tok.decode(ex.input_ids)
    assert text == f"<bos><start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n{response}<end_of_turn>\n"
    trained = [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE_INDEX]
    assert tiny_tok.decode(trained) == f"{response}<end_of_turn>"
    end_id = tiny_tok.convert_tokens_to_ids("<end_of_turn>")
    assert trained.count(end_id) == 1 and trained[-1] == end_id
    assert ex.input_ids.count(tiny_tok.bos_token_id) == 1


def test_generation_prompt_is_the_training_prefix(tiny_tok) -> None:
    template = get_template(tiny_tok)
    messages = conv("Habari yako?", "Nzuri sana.")
    ex = render_for_training(tiny_tok, template, messages)
    prompt_ids = render_prompt(tiny_tok, template, messages)
    assert ex.input_ids[: len(prompt_ids)] == prompt_ids
    assert all(lab == IGNORE_INDEX for lab in ex.labels[: len(prompt_ids)])
    assert ex.labels[len(prompt_ids)] != IGNORE_INDEX


def test_system_turn_goes_into_first_user_turn(tiny_tok) -> None:
    template = get_template(tiny_tok)
    ids = render_prompt(tiny_tok, template, conv("Hi", "Hello", system="Be brief."))
    assert tiny_tok.decode(ids).startswith("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>")


def test_multi_turn_masks(tiny_tok) -> None:
    template = get_template(tiny_tok)
    messages = [Message("user", "a"), Message("assistant", "b"), Message("user", "c"), Message("assistant", "d")]
    end_id = tiny_tok.convert_tokens_to_ids("<end_of_turn>")
    every = render_for_training(tiny_tok, template, messages, train_on="all_assistant")
    last = render_for_training(tiny_tok, template, messages, train_on="last_assistant")
    assert [t for t in every.labels if t != IGNORE_INDEX].count(end_id) == 2
    assert [t for t in last.labels if t != IGNORE_INDEX].count(end_id) == 1
    assert tiny_tok.decode([t for t in last.labels if t != IGNORE_INDEX]) == "d<end_of_turn>"


def test_content_cannot_inject_control_tokens(tiny_tok) -> None:
    template = get_template(tiny_tok)
    ex = render_for_training(tiny_tok, template, conv("say <end_of_turn> please", "ok"))
    end_id = tiny_tok.convert_tokens_to_ids("<end_of_turn>")
    assert ex.input_ids.count(end_id) == 2  # the user turn's and the assistant turn's, not the one in the text


def test_tokenizer_template_is_used_when_present(tiny_tok) -> None:
    from babeltune.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<eos>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>assistant\n{% endif %}"
    )
    template = get_template(tok)
    assert template.name == "tokenizer"
    ex = render_for_training(tok, template, conv("Ciao", "Salve"))
    trained = [t for t in ex.labels if t != IGNORE_INDEX]
    assert tok.decode(trained) == "Salve<eos>\n"
    prompt_ids = render_prompt(tok, template, conv("Ciao", "Salve"))
    assert ex.input_ids[: len(prompt_ids)] == prompt_ids
    assert tok.eos_token_id in template.stop_token_ids(tok)


def test_template_without_eos_is_rejected(tiny_tok) -> None:
    from babeltune.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(RenderError, match="0 stop token"):
        render_for_training(tok, get_template(tok), conv("Ciao", "Salve"))


def test_gemma_template_needs_turn_tokens() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    with pytest.raises(RenderError, match="no <start_of_turn> token"):
        get_template(tok)
