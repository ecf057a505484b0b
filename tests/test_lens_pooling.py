"""Lens manipulation losses pooled per loss (the release: retain on the mean over the prompt, the
language-specific and language-agnostic losses on the last prompt token), against a hand computation."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from babeltune.lens.config import LensTrainConfig
from babeltune.lens.manipulate import ManipulationLoss, ParallelGroup, collate_groups, reference_states
from babeltune.lens.subspace import LanguageSubspace
from babeltune.models.anatomy import decoder_of

LANGS = ["en", "es", "ru"]
TEXTS = {"en": ["How are you today?", "The quick brown fox."],
         "es": ["¿Cómo estás hoy?", "El rápido zorro marrón salta sobre el perro."],
         "ru": ["Как дела сегодня?", "Быстрая лиса."]}


def _top_states(model: Any, ids: tuple[int, ...]) -> torch.Tensor:
    """The final layer's states (after the final norm) of one unpadded prompt: (T, D)."""
    with torch.no_grad():
        return decoder_of(model)(input_ids=torch.tensor([ids]), use_cache=False).last_hidden_state[0].double()


def _pooled(states: torch.Tensor, pool: str) -> torch.Tensor:
    return states.mean(dim=0) if pool == "mean" else states[-1]


def test_release_defaults() -> None:
    cfg = LensTrainConfig()
    assert (cfg.retain_pool, cfg.agnostic_pool, cfg.specific_pool) == ("mean", "last", "last")
    assert cfg.pools() == ["mean", "last"]


@pytest.mark.parametrize("pools", [("mean", "last", "last"), ("last", "mean", "mean"), ("mean", "mean", "last"),
                                   ("last", "last", "mean")])
def test_each_loss_reads_its_own_pooling(tiny_tok: Any, pools: tuple[str, str, str]) -> None:
    from babeltune.testing import tiny_model

    retain_pool, agnostic_pool, specific_pool = pools
    cfg = LensTrainConfig(subspace="x", retain_pool=retain_pool, agnostic_pool=agnostic_pool,  # type: ignore[arg-type]
                          specific_pool=specific_pool, specific_target=0.7)  # type: ignore[arg-type]
    model = tiny_model(tiny_tok, layers=2)
    means = torch.randn(2, len(LANGS), 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sub = LanguageSubspace.from_means(LANGS, "en", means)
    groups = [ParallelGroup(f"p{g}", {lang: tuple(tiny_tok(TEXTS[lang][g])["input_ids"]) for lang in LANGS})
              for g in range(2)]
    pad = tiny_tok.pad_token_id
    reference = reference_states(model, groups, LANGS, pad, cfg.pools())
    before = {lang: [_top_states(model, g.ids[lang]) for g in groups] for lang in LANGS}
    with torch.no_grad():  # move the model away from its reference, so that the retain loss is not 0
        for param in model.model.layers[-1].parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(7)))
    after = {lang: [_top_states(model, g.ids[lang]) for g in groups] for lang in LANGS}

    loss = ManipulationLoss(model, sub, LANGS, cfg, pad)
    batch = collate_groups(groups, [0, 1], LANGS, reference, pad)  # left-padded: lengths differ
    total, parts = loss(**batch.inputs)

    top = sub.n_layers - 1
    basis = sub.specific[top].double()  # (r, D)
    unit = (sub.common[top] / sub.common[top].norm()).double()

    def specific_part(h: torch.Tensor) -> torch.Tensor:
        return basis.T @ (basis @ h)

    def shared_part(h: torch.Tensor) -> torch.Tensor:
        return (h @ unit) * unit

    retain = specific = agnostic = 0.0
    for g in range(2):
        h_c = _pooled(after["en"][g], retain_pool)
        retain += float(((h_c - _pooled(before["en"][g], retain_pool)) ** 2).mean())
        for lang in ("es", "ru"):
            moved = specific_part(_pooled(after[lang][g], specific_pool)) - specific_part(
                _pooled(before[lang][g], specific_pool))
            specific += float(((moved - 0.7 * sub.direction(lang, top).double()) ** 2).mean())
            agnostic += float(((shared_part(_pooled(after["en"][g], agnostic_pool))
                                - shared_part(_pooled(after[lang][g], agnostic_pool))) ** 2).mean())
    assert retain > 1e-8
    assert float(parts["retain"]) == pytest.approx(retain, rel=1e-4)
    assert float(parts["specific"]) == pytest.approx(specific, rel=1e-4)
    assert float(parts["agnostic"]) == pytest.approx(agnostic, rel=1e-4)
    assert float(total) == pytest.approx(retain + specific + agnostic, rel=1e-4)
    references = sorted(k for k in batch.inputs if k.startswith("reference_"))
    assert references == sorted(f"reference_{p}" for p in cfg.pools())


def test_the_old_single_pool_setting_is_refused() -> None:
    from babeltune.config import load_config

    with pytest.raises(ValueError, match="unknown key"):
        load_config(LensTrainConfig, None, ["pool=mean"], {}, {})
    assert load_config(LensTrainConfig, None, ["retain_pool=last"], {}, {}).retain_pool == "last"
