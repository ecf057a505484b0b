"""Lens (study C) on tiny models: padding, subspace math, save/load, probing, diagnostics, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from babeltune.data import Message
from babeltune.lens.config import ProbeConfig
from babeltune.lens.prompts import collect_prompts, render_probe_prompt, text_files
from babeltune.lens.states import check_layers, collect_states, num_layers, pad_batch
from babeltune.lens.subspace import LanguageSubspace, SubspaceMismatchError, layer_subspace
from babeltune.models import get_template, render_prompt
from tests.conftest import make_parallel, write_rows

LANGS = ("en", "es", "ru", "zh")


def _seqs(tok: Any) -> list[list[int]]:
    texts = ["hello world, how are you", "hi", "El rápido zorro marrón salta sobre el perro", "敏捷的棕色狐狸"]
    return [list(tok(t)["input_ids"]) for t in texts]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("pool", ["last", "mean"])
def test_padding_does_not_change_states(tiny_tok: Any, tiny_lm: Any, side: str, pool: str) -> None:
    seqs = _seqs(tiny_tok)
    alone = torch.cat([collect_states(tiny_lm, [s], tiny_tok.pad_token_id, pool=pool) for s in seqs], dim=1)
    batched = collect_states(tiny_lm, seqs, tiny_tok.pad_token_id, pool=pool, padding_side=side, batch_size=4)
    assert batched.shape == (2, 4, 32)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_last_layer_state_is_the_final_norm_output(tiny_tok: Any, tiny_lm: Any) -> None:
    seq = _seqs(tiny_tok)[0]
    states = collect_states(tiny_lm, [seq], tiny_tok.pad_token_id)  # (L, 1, D)
    out = tiny_lm(torch.tensor([seq]), output_hidden_states=True)
    for layer in range(2):
        torch.testing.assert_close(states[layer, 0], out.hidden_states[layer + 1][0, -1])


def test_pad_batch_positions_and_last_index() -> None:
    batch = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    assert batch.input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch.position_ids.tolist() == [[0, 1, 2], [0, 0, 0]]
    assert batch.last_index.tolist() == [2, 2]
    right = pad_batch([[5, 6, 7], [8]], pad_id=0, side="right")
    assert right.last_index.tolist() == [2, 0]
    assert right.position_ids[1, 0] == 0


def test_layer_subspace_geometry() -> None:
    means = np.random.default_rng(0).normal(size=(32, 5))  # (D, n)
    common, basis = layer_subspace(means, rank=4)
    assert basis.shape == (32, 4)
    np.testing.assert_allclose(basis.T @ basis, np.eye(4), atol=1e-10)
    v = common / (common @ common)
    # every language mean has the same inner product with pinv(M)^T 1 (= 1): c is what they share
    np.testing.assert_allclose(means.T @ v, np.ones(5), atol=1e-8)
    np.testing.assert_allclose(basis.T @ common, 0, atol=1e-10)
    rest = means - common[:, None]
    np.testing.assert_allclose(basis @ (basis.T @ rest), rest, atol=1e-8)  # with r = n - 1, means = c + M_s g


def test_layer_subspace_rejects_bad_rank() -> None:
    with pytest.raises(ValueError, match="rank must be between 1 and n_languages - 1 = 2"):
        layer_subspace(np.ones((8, 3)), rank=3)


def _subspace(n_layers: int = 2, dim: int = 32, seed: int = 0) -> LanguageSubspace:
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(n_layers, len(LANGS), dim, generator=gen, dtype=torch.float64)
    return LanguageSubspace.from_means(LANGS, "en", means, meta={"model": "tiny", "fingerprint": "abc"})


def test_directions_are_projected_differences_to_english() -> None:
    sub = _subspace()
    assert sub.rank == 3
    assert torch.count_nonzero(sub.direction("en", 1)) == 0
    expected = sub.project_specific((sub.means[1, 2] - sub.means[1, 0]).double(), 1)
    torch.testing.assert_close(sub.direction("ru", 1).double(), expected, atol=1e-5, rtol=1e-4)


def test_save_load_round_trip(tmp_path: Path) -> None:
    sub = _subspace()
    sub.save(tmp_path / "s")
    back = LanguageSubspace.load(tmp_path / "s")
    assert back.languages == sub.languages and back.central == "en" and back.meta == sub.meta
    for name in ("means", "common", "specific", "directions"):
        assert torch.equal(getattr(back, name), getattr(sub, name)), name
    meta = json.loads((tmp_path / "s" / "subspace.json").read_text())
    assert meta["rank"] == 3 and meta["fingerprint"] == "abc" and meta["n_layers"] == 2


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no language subspace"):
        LanguageSubspace.load(tmp_path)


def test_subspace_from_another_model_is_refused(tiny_tok: Any, tiny_lm: Any) -> None:
    wrong_dim = _subspace(dim=48)
    with pytest.raises(SubspaceMismatchError, match="hidden size 48"):
        wrong_dim.check_model(tiny_lm)
    wrong_depth = _subspace(n_layers=3)
    with pytest.raises(SubspaceMismatchError, match="3 layers"):
        wrong_depth.check_model(tiny_lm)
    with pytest.raises(SubspaceMismatchError, match="fingerprint"):
        _subspace().check_model(tiny_lm, fingerprint="other")
    _subspace().check_model(tiny_lm, fingerprint="abc")


def test_layer_index_out_of_range() -> None:
    assert check_layers([-1, 0], 4) == [3, 0]
    with pytest.raises(ValueError, match="layer index 4 is out of range: the model has 4 layers"):
        check_layers([4], 4)


def test_truncation_keeps_the_template_header(tiny_tok: Any) -> None:
    template = get_template(tiny_tok)
    long = [Message("user", "word " * 200)]
    ids, cut = render_probe_prompt(tiny_tok, template, long, max_tokens=24)
    assert cut and len(ids) <= 24
    header = render_prompt(tiny_tok, template, [Message("user", "x")])[-3:]
    assert ids[-3:] == header  # the prompt still ends with "<end_of_turn>\n<start_of_turn>model\n"
    short, cut = render_probe_prompt(tiny_tok, template, [Message("user", "hi")], max_tokens=24)
    assert not cut and short == render_prompt(tiny_tok, template, [Message("user", "hi")])


def test_text_files_by_name_and_by_suffix(tmp_path: Path) -> None:
    (tmp_path / "eng_Latn.dev").write_text("one\ntwo\n")
    (tmp_path / "notes.txt").write_text("x\n")
    assert text_files(str(tmp_path)) == [(tmp_path / "eng_Latn.dev", "en")]
    assert text_files(f"{tmp_path / 'notes.txt'}=fi") == [(tmp_path / "notes.txt", "fi")]
    with pytest.raises(ValueError, match="write PATH=LANG"):
        text_files(str(tmp_path / "notes.txt"))
    with pytest.raises(ValueError, match="unknown language code"):
        text_files(f"{tmp_path / 'notes.txt'}=xx")


def test_too_few_prompts_is_a_clear_error(tiny_tok: Any, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "p.jsonl", make_parallel(10, LANGS))
    with pytest.raises(ValueError, match=r"too few prompts for a stable language mean \(en: 8, es: 8"):
        collect_prompts(tiny_tok, get_template(tiny_tok), sources=[str(data)], min_per_language=9, holdout=0.2)


def test_parallel_groups_are_held_out_together(tiny_tok: Any, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "p.jsonl", make_parallel(20, LANGS))
    split = collect_prompts(tiny_tok, get_template(tiny_tok), sources=[str(data)], min_per_language=5, holdout=0.25)
    held = {lang: {p.pid for p in items} for lang, items in split.heldout.items()}
    assert all(len(pids) == 5 for pids in held.values()) and len({frozenset(p) for p in held.values()}) == 1
    assert not held["en"] & {p.pid for p in split.train["en"]}


def probe_tiny(tok: Any, model: Any, data: Path, **overrides: Any) -> Any:
    from babeltune.lens.probing import probe

    cfg = ProbeConfig(data=[str(data)], min_per_language=5, holdout=0.25, batch_size=8, **overrides)
    return probe(model, tok, cfg, model_name="tiny", fingerprint="tinyfp")


def test_probe_end_to_end_on_a_tiny_model(tiny_tok: Any, tiny_lm: Any, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "p.jsonl", make_parallel(24, LANGS))
    result = probe_tiny(tiny_tok, tiny_lm, data)
    sub = result.subspace
    assert sub.languages == LANGS and sub.rank == 3 and sub.n_layers == num_layers(tiny_lm) == 2
    assert sub.meta["counts"]["es"] == {"train": 18, "heldout": 6}
    assert len(result.diagnostics) == 2
    row = result.diagnostics[-1]
    # the synthetic languages differ in script and words: the subspace identifies them on held-out prompts
    assert row.specific_acc == pytest.approx(1.0)
    assert row.retrieval_raw is not None and 0 <= row.retrieval_raw <= 1
    assert torch.count_nonzero(sub.direction("en", 1)) == 0


def test_probe_is_reproducible(tiny_tok: Any, tiny_lm: Any, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "p.jsonl", make_parallel(16, LANGS))
    a = probe_tiny(tiny_tok, tiny_lm, data).subspace
    b = probe_tiny(tiny_tok, tiny_lm, data).subspace
    assert torch.equal(a.specific, b.specific) and torch.equal(a.directions, b.directions)


def test_probe_from_plain_text_files(tiny_tok: Any, tiny_lm: Any, tmp_path: Path) -> None:
    from babeltune.lens.probing import probe
    from tests.conftest import SAMPLE_TEXT

    folder = tmp_path / "flores"
    folder.mkdir()
    for lang, code in (("en", "eng_Latn"), ("es", "spa_Latn"), ("ru", "rus_Cyrl")):
        lines = [f"{SAMPLE_TEXT[lang][0]} {i}" for i in range(12)]
        (folder / f"{code}.dev").write_text("\n".join(lines) + "\n\n")
    cfg = ProbeConfig(text=[str(folder)], parallel_text=True, min_per_language=5, holdout=0.25)
    result = probe(tiny_lm, tiny_tok, cfg)
    assert result.subspace.languages == ("en", "es", "ru") and result.subspace.rank == 2
    assert result.split.counts()["ru"] == {"train": 9, "heldout": 3}
    assert result.split.report.empty_lines == 3
    assert result.diagnostics[0].retrieval_raw is not None  # parallel lines: translation retrieval is measured
