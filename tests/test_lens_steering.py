"""Steering hooks on a tiny model: exact no-op at 0, the edit itself, hooks always removed."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from babeltune.lens.states import collect_states, state_sites
from babeltune.lens.steering import steer
from babeltune.lens.subspace import LanguageSubspace

LANGS = ("en", "es", "ru", "zh")


@pytest.fixture
def subspace() -> LanguageSubspace:
    gen = torch.Generator().manual_seed(1)
    means = torch.randn(2, len(LANGS), 32, generator=gen, dtype=torch.float64)
    return LanguageSubspace.from_means(LANGS, "en", means, meta={"fingerprint": "fp"})


def _ids(tok: Any) -> torch.Tensor:
    return torch.tensor([tok("How are you today?")["input_ids"]])


def _hooks(model: Any) -> int:
    return sum(len(site._forward_hooks) for site in state_sites(model))


@pytest.mark.parametrize("mode", ["add", "project"])
def test_coefficient_zero_is_exactly_unsteered(tiny_tok: Any, tiny_lm: Any, subspace: LanguageSubspace,
                                               mode: str) -> None:
    ids = _ids(tiny_tok)
    with torch.no_grad():
        plain_logits = tiny_lm(ids).logits
        plain_gen = tiny_lm.generate(ids, max_new_tokens=8, do_sample=False)
        with steer(tiny_lm, subspace, mode=mode, coefficient=0.0, layers=[0, 1], lang="es"):  # type: ignore[arg-type]
            logits = tiny_lm(ids).logits
            gen = tiny_lm.generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(logits, plain_logits)
    assert torch.equal(gen, plain_gen)


def test_add_moves_the_state_by_the_scaled_direction(tiny_tok: Any, tiny_lm: Any, subspace: LanguageSubspace) -> None:
    seq = [list(_ids(tiny_tok)[0])]
    plain = collect_states(tiny_lm, seq, tiny_tok.pad_token_id)  # (L, 1, D)
    with steer(tiny_lm, subspace, mode="add", coefficient=3.0, layers=[-1], lang="ru") as steering:
        steered = collect_states(tiny_lm, seq, tiny_tok.pad_token_id)
    assert steering.calls == {1: 1}
    torch.testing.assert_close(steered[1, 0], plain[1, 0] + 3.0 * subspace.direction("ru", 1))
    torch.testing.assert_close(steered[0], plain[0])  # layers below are untouched


def test_project_removes_the_language_specific_part(tiny_tok: Any, tiny_lm: Any, subspace: LanguageSubspace) -> None:
    seq = [list(_ids(tiny_tok)[0])]
    with steer(tiny_lm, subspace, mode="project", coefficient=1.0, layers=[1]):
        steered = collect_states(tiny_lm, seq, tiny_tok.pad_token_id)
    assert subspace.project_specific(steered[1, 0], 1).abs().max() < 1e-4


def test_edits_earlier_layers_change_the_output(tiny_tok: Any, tiny_lm: Any, subspace: LanguageSubspace) -> None:
    ids = _ids(tiny_tok)
    with torch.no_grad():
        plain = tiny_lm(ids).logits
        with steer(tiny_lm, subspace, coefficient=5.0, layers=[0], lang="zh"):
            steered = tiny_lm(ids).logits
    assert not torch.allclose(plain, steered)


def test_per_row_languages(tiny_tok: Any, tiny_lm: Any, subspace: LanguageSubspace) -> None:
    seqs = [list(_ids(tiny_tok)[0])] * 2
    plain = collect_states(tiny_lm, seqs, tiny_tok.pad_token_id)
    with steer(tiny_lm, subspace, coefficient=2.0, layers=[1]) as steering:
        steering.set_languages(["es", "zh"])
        steered = collect_states(tiny_lm, seqs, tiny_tok.pad_token_id, batch_size=2)
    torch.testing.assert_close(steered[1, 1] - plain[1, 1], 2.0 * subspace.direction("zh", 1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(steered[1, 0] - plain[1, 0], 2.0 * subspace.direction("es", 1), atol=1e-5, rtol=1e-4)


def test_hooks_are_removed_even_after_an_exception(tiny_tok: Any, tiny_lm: Any, subspace: LanguageSubspace) -> None:
    assert _hooks(tiny_lm) == 0
    with pytest.raises(RuntimeError, match="boom"), steer(tiny_lm, subspace, layers=[0, 1], lang="es"):
        assert _hooks(tiny_lm) == 2
        raise RuntimeError("boom")
    assert _hooks(tiny_lm) == 0


def test_bad_steering_requests(tiny_tok: Any, tiny_lm: Any, subspace: LanguageSubspace) -> None:
    with pytest.raises(ValueError, match="out of range"), steer(tiny_lm, subspace, layers=[2], lang="es"):
        pass
    with pytest.raises(ValueError, match="language 'fi' was not probed"), steer(tiny_lm, subspace, lang="fi"):
        pass
    with pytest.raises(ValueError, match="fingerprint"), steer(tiny_lm, subspace, lang="es", fingerprint="other"):
        pass
    with pytest.raises(ValueError, match="needs a target language"), steer(tiny_lm, subspace), torch.no_grad():
        tiny_lm(_ids(tiny_tok))
    assert _hooks(tiny_lm) == 0


def test_digest_names_the_content(subspace: LanguageSubspace) -> None:
    a = LanguageSubspace.from_means(LANGS, "en", subspace.means)
    assert a.digest() == LanguageSubspace.from_means(LANGS, "en", subspace.means).digest()
    assert a.digest() != LanguageSubspace.from_means(LANGS, "es", subspace.means).digest()
