"""Integration tests on the real embedded default model (gemma-3-270m from its PyPI package)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from babeltune.data import Message
from babeltune.models import IGNORE_INDEX, get_template, load_model, render_for_training, render_prompt

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def default():
    return load_model("gemma-3-270m")


def test_loads_offline_as_a_trainable_float_model(default) -> None:
    model = default.model
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert model.config.num_hidden_layers == 18 and model.config.hidden_size == 640
    assert getattr(model, "hf_quantizer", None) is None
    assert not hasattr(model.config, "quantization_config")
    assert next(model.parameters()).dtype == torch.float32


def test_render_and_forward_every_script(default) -> None:
    from tests.conftest import SAMPLE_TEXT

    tok, template = default.tokenizer, get_template(default.tokenizer)
    assert template.name == "gemma"
    for lang, (prompt, response) in SAMPLE_TEXT.items():
        ex = render_for_training(tok, template, [Message("user", prompt), Message("assistant", response)])
        ids = torch.tensor([ex.input_ids])
        labels = torch.tensor([ex.labels])
        with torch.no_grad():
            loss = default.model(input_ids=ids, labels=labels).loss
        assert torch.isfinite(loss) and 0 < loss.item() < 20, lang
        trained = [t for t in ex.labels if t != IGNORE_INDEX]
        assert tok.decode(trained) == f"{response}<end_of_turn>"
        prompt_ids = render_prompt(tok, template, [Message("user", prompt)])
        assert prompt_ids[:2] == [tok.bos_token_id, tok.convert_tokens_to_ids("<start_of_turn>")]


def test_a_training_step_changes_parameters_and_round_trips(default, tmp_path: Path) -> None:
    model = default.model
    tok, template = default.tokenizer, get_template(default.tokenizer)
    layer = model.model.layers[-1].mlp.down_proj.weight
    before = layer.detach().clone()
    ex = render_for_training(tok, template, [Message("user", "Hola, ¿qué tal?"), Message("assistant", "Muy bien.")])
    model.train()
    optim = torch.optim.SGD([layer], lr=1e-2)
    loss = model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels])).loss
    loss.backward()
    optim.step()
    model.eval()
    assert not torch.equal(before, layer.detach())
    model.save_pretrained(tmp_path / "tuned")
    tok.save_pretrained(tmp_path / "tuned")
    again = load_model(tmp_path / "tuned")
    for (name, p), (_, q) in zip(model.state_dict().items(), again.model.state_dict().items(), strict=True):
        assert torch.equal(p, q), name
    with torch.no_grad():
        layer.copy_(before)
