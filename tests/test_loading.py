from __future__ import annotations

from pathlib import Path

import pytest
import torch

from babeltune.models import ModelLoadError, load_model, model_fingerprint


def test_local_folder_round_trip(tiny_lm, tiny_tok, tmp_path: Path) -> None:
    tiny_lm.save_pretrained(tmp_path / "m")
    tiny_tok.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    loaded = load_model(tmp_path / "m")
    for (name, p), (_, q) in zip(tiny_lm.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert torch.equal(p, q), name
    ids = torch.tensor([[1, 5, 9, 30]])
    with torch.no_grad():  # attention kernels may differ (eager vs sdpa): equal up to float rounding
        assert torch.allclose(loaded.model(ids).logits, tiny_lm(ids).logits, atol=1e-5)
    assert loaded.tokenizer("héllo")["input_ids"] == tiny_tok("héllo")["input_ids"]


def test_fingerprint_tracks_weights(tiny_lm, tiny_tok, tmp_path: Path) -> None:
    tiny_lm.save_pretrained(tmp_path / "a")
    first = model_fingerprint(tmp_path / "a")
    assert model_fingerprint(tmp_path / "a") == first  # cached, same
    with torch.no_grad():
        next(tiny_lm.parameters()).add_(1.0)
    tiny_lm.save_pretrained(tmp_path / "a")
    assert model_fingerprint(tmp_path / "a") != first


def test_adapter_folder_loads_on_its_base(tiny_lm, tiny_tok, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    tiny_lm.save_pretrained(tmp_path / "base")
    tiny_tok.save_pretrained(tmp_path / "base")
    peft_model = get_peft_model(tiny_lm, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    import json

    cfg = tmp_path / "adapter" / "adapter_config.json"
    data = json.loads(cfg.read_text())
    data["base_model_name_or_path"] = str(tmp_path / "base")
    cfg.write_text(json.dumps(data))
    loaded = load_model(tmp_path / "adapter")
    assert loaded.adapter == str(tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9]])
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids).logits, peft_model(ids).logits, atol=1e-6)


def test_unavailable_hub_model_fails_fast_with_instructions(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="--model DIR"):
        load_model("someone/not-a-cached-model")
