"""Unit tests of the training pieces on a tiny model: loss equivalence, packing, schedules, data policy."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from babeltune.config import ConfigError, load_config
from babeltune.data import record_from_dict
from babeltune.models import IGNORE_INDEX, get_template
from babeltune.train import (
    DataSchedule,
    FlopsModel,
    SupervisedLMLoss,
    TrainConfig,
    TrainDataError,
    collate,
    linear_cross_entropy,
    lr_factor,
    pack_rows,
    prepare_examples,
)
from babeltune.train.batching import shard_step
from tests.conftest import make_parallel

CONFIGS = sorted((Path(__file__).parent.parent / "babeltune" / "configs").glob("train_*.yaml"))


def _examples(tok: Any, n_pids: int = 1, max_length: int = 128, **kwargs: Any) -> Any:
    records = [record_from_dict(r) for r in make_parallel(n_pids)]
    return prepare_examples(records, tok, get_template(tok), max_length=max_length, **kwargs)


def _naive_sum(lm: Any, examples: Any) -> torch.Tensor:
    """Sum of per-example losses through the model's own forward with full logits (no packing)."""
    total = torch.zeros(())
    for ex in examples:
        logits = lm(input_ids=torch.tensor([ex.input_ids])).logits[0]  # (L, V)
        total = total + torch.nn.functional.cross_entropy(logits, torch.tensor(ex.targets),
                                                          ignore_index=IGNORE_INDEX, reduction="sum")
    return total


@pytest.mark.parametrize("pack", [True, False])
def test_packed_supervised_loss_equals_the_naive_path(tiny_tok: Any, tiny_lm: Any, pack: bool) -> None:
    examples, _ = _examples(tiny_tok)
    batch = collate(examples[:6], pack=pack, capacity=256, pad_id=tiny_tok.pad_token_id)
    if pack:
        assert batch.inputs["input_ids"].shape[0] < 6  # several examples share a row
    fused = SupervisedLMLoss(tiny_lm, chunk=5, vocab_tile=100)(**batch.inputs)  # several row and vocab tiles
    fused.backward()
    fused_grads = {n: p.grad.clone() for n, p in tiny_lm.named_parameters()}
    # the tied table's lookups ran sparse for that call only; its gradient is the dense sum
    embeddings = tiny_lm.get_input_embeddings()
    assert embeddings.weight is tiny_lm.get_output_embeddings().weight and not embeddings.sparse
    assert embeddings.weight.grad.layout == torch.strided
    tiny_lm.zero_grad()
    naive = _naive_sum(tiny_lm, examples[:6])
    naive.backward()
    assert batch.n_items == sum(ex.n_supervised for ex in examples[:6])
    assert fused.item() == pytest.approx(naive.item(), rel=1e-5)
    for name, param in tiny_lm.named_parameters():
        torch.testing.assert_close(fused_grads[name], param.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_bf16_autocast_loss_stays_close(tiny_tok: Any, tiny_lm: Any) -> None:
    examples, _ = _examples(tiny_tok)
    batch = collate(examples[:4], pack=True, capacity=256, pad_id=tiny_tok.pad_token_id)
    module = SupervisedLMLoss(tiny_lm, compute_dtype=torch.bfloat16)
    exact = float(module(**batch.inputs))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = float(module(**batch.inputs))
    assert low == pytest.approx(exact, rel=2e-2)
    assert low != exact  # autocast really took effect


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_linear_cross_entropy_matches_torch(softcap: float | None) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(11, 8, requires_grad=True)
    weight = torch.randn(40, 8, requires_grad=True)
    targets = torch.randint(0, 40, (11,))
    fused = linear_cross_entropy(hidden, weight, targets, chunk=3, softcap=softcap, vocab_tile=16)
    (fused / 3).backward()  # an upstream gradient other than 1 scales both saved gradients
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    logits = hidden @ weight.T
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    expected = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    (expected / 3).backward()
    assert float(fused) == pytest.approx(float(expected), rel=1e-6)
    torch.testing.assert_close(grads[0], hidden.grad)
    torch.testing.assert_close(grads[1], weight.grad)


def test_no_rows_give_zero_gradients() -> None:
    weight = torch.randn(40, 8, requires_grad=True)
    hidden = torch.randn(0, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.zeros(0, dtype=torch.long), vocab_tile=16)
    loss.backward()
    assert float(loss) == 0.0 and torch.count_nonzero(weight.grad) == 0


def test_frozen_head_gets_no_gradient_work() -> None:
    hidden = torch.randn(4, 8, requires_grad=True)
    weight = torch.randn(16, 8)  # frozen
    loss = linear_cross_entropy(hidden, weight, torch.tensor([1, 2, 3, 4]))
    loss.backward()
    assert hidden.grad is not None and weight.grad is None


def test_pack_rows_first_fit_decreasing() -> None:
    rows = pack_rows([5, 3, 8, 2, 2], capacity=10)
    assert sorted(i for row in rows for i in row) == [0, 1, 2, 3, 4]
    assert all(sum([5, 3, 8, 2, 2][i] for i in row) <= 10 for row in rows)
    assert rows == [[2, 3], [0, 1, 4]]
    assert pack_rows([12, 3], capacity=10) == [[0], [1]]  # too long: a row of its own


def test_collate_restarts_positions_and_pads_as_separate_segment(tiny_tok: Any) -> None:
    examples, _ = _examples(tiny_tok)
    batch = collate(examples[:3], pack=True, capacity=1000, pad_id=tiny_tok.pad_token_id)
    positions = batch.inputs["position_ids"][0].tolist()
    lengths = sorted((len(ex) for ex in examples[:3]), reverse=True)
    assert batch.inputs["input_ids"].shape == (1, sum(lengths))
    assert positions == [p for n in lengths for p in range(n)]
    assert batch.n_tokens == sum(lengths) and batch.n_padded == sum(lengths)
    empty = collate([], pack=True, capacity=10, pad_id=0)
    assert empty.n_items == 0 and empty.inputs["target_index"].numel() == 0


def test_schedule_is_deterministic_and_covers_each_epoch() -> None:
    schedule = DataSchedule.build(10, global_batch=4, epochs=2, max_steps=None, seed=3, shuffle=True)
    assert schedule.steps_per_epoch == 3 and schedule.total_steps == 6
    epoch0 = [i for step in range(3) for i in schedule.step_examples(step)[1]]
    assert sorted(epoch0) == list(range(10))
    assert schedule.step_examples(2)[1] == epoch0[8:]  # the epoch's short last step
    assert schedule.step_examples(3)[0] == 1 and schedule.epoch_order(1) != schedule.epoch_order(0)
    again = DataSchedule.build(10, global_batch=4, epochs=2, max_steps=None, seed=3, shuffle=True)
    assert again.step_examples(4) == schedule.step_examples(4)
    assert DataSchedule.build(10, 4, 1, max_steps=7, seed=0, shuffle=False).total_steps == 7


def test_shard_step_splits_across_processes_without_loss() -> None:
    indices = list(range(7))
    shares = [shard_step(indices, batch_size=2, grad_accum=2, rank=r, world=2) for r in range(2)]
    assert sorted(i for share in shares for micro in share for i in micro) == indices
    assert all(len(share) == 2 for share in shares)
    assert shard_step([0], batch_size=2, grad_accum=3, rank=1, world=2) == [[]]  # same micro count as rank 0


def test_lr_schedule_shapes() -> None:
    cosine = [lr_factor(s, total_steps=10, warmup_steps=2, schedule="cosine") for s in range(10)]
    assert cosine[:2] == pytest.approx([1 / 3, 2 / 3])
    assert cosine[2] == 1.0 and cosine[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in itertools.pairwise(cosine[2:]))
    linear = [lr_factor(s, total_steps=4, warmup_steps=0, schedule="linear") for s in range(4)]
    assert linear == [1.0, 0.75, 0.5, 0.25]
    assert lr_factor(5, total_steps=4, warmup_steps=0, schedule="constant") == 1.0


def test_overflow_policies_are_counted(tiny_tok: Any) -> None:
    full, _ = _examples(tiny_tok, max_length=1000)
    limit = sorted(len(ex) for ex in full)[len(full) // 2]
    longer = sum(1 for ex in full if len(ex) > limit)
    truncated, report = _examples(tiny_tok, max_length=limit, overflow="truncate")
    assert report.truncated + report.dropped["nothing_to_train_after_truncation"] == longer
    assert all(len(ex) <= limit for ex in truncated)
    dropped, report = _examples(tiny_tok, max_length=limit, overflow="drop")
    assert len(dropped) == len(full) - longer and report.dropped["too_long"] == longer
    assert len(report.dropped_ids["too_long"]) == longer
    with pytest.raises(TrainDataError, match=r"record 'p000-\w+' has \d+ tokens.*max_length"):
        _examples(tiny_tok, max_length=limit, overflow="error")
    with pytest.raises(TrainDataError, match="no training examples left"):
        _examples(tiny_tok, max_length=3, overflow="drop")


def test_targets_are_the_shifted_assistant_labels(tiny_tok: Any) -> None:
    examples, report = _examples(tiny_tok)
    ex = examples[0]
    trained = [t for t in ex.targets if t != IGNORE_INDEX]
    assert trained[-1] == tiny_tok.convert_tokens_to_ids("<end_of_turn>")
    assert ex.n_supervised == len(trained) and report.supervised_tokens == sum(e.n_supervised for e in examples)
    assert ex.targets[-1] == IGNORE_INDEX and len(ex.targets) == len(ex.input_ids)


def test_flops_count(tiny_lm: Any) -> None:
    flops = FlopsModel.from_model(tiny_lm)
    assert flops.head_trained and flops.trainable_body_linear_params == flops.body_linear_params
    one = flops.step_flops([10], supervised_tokens=4)
    body = 10 * 6 * flops.body_linear_params
    head = 4 * 6 * flops.vocab * flops.hidden
    attention = 3 * flops.layers * 2 * flops.heads * flops.head_dim * 110
    assert one == body + head + attention


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    config = load_config(TrainConfig, path)
    assert config.adam_betas == (0.9, 0.95)


@pytest.mark.parametrize("override, message", [
    ("batch_size=0", "batch_size must be positive"),
    ("overflow=cut", "overflow must be one of"),
    ("lora.r=0", "lora.r must be positive"),
    ("lr_sweep=[1e-4,1e-4]", "lists a value twice"),
    ("adam_betas=[0.9,1.5]", "adam_betas must be within"),
    ("warmup=3", "unknown key"),
])
def test_config_errors_name_the_option(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, None, [override])


def test_numbers_fingerprint_ignores_run_management() -> None:
    base = TrainConfig(data="x")
    assert TrainConfig(data="x", out=Path("elsewhere"), save_every=5).numbers_fingerprint() == \
        base.numbers_fingerprint()
    assert TrainConfig(data="x", lr=3e-4).numbers_fingerprint() != base.numbers_fingerprint()


def test_startup_check_catches_a_head_the_fused_loss_cannot_reproduce(tiny_tok: Any, tiny_lm: Any) -> None:
    from babeltune.train.modeling import NaiveLMLoss, fused_loss_matches

    examples, _ = _examples(tiny_tok)
    ex = min(examples, key=len)
    assert fused_loss_matches(tiny_lm, list(ex.input_ids), list(ex.targets))
    head = tiny_lm.lm_head
    head.forward = lambda x: torch.nn.functional.linear(x, head.weight) * 2.0  # e.g. a model that scales logits
    assert not fused_loss_matches(tiny_lm, list(ex.input_ids), list(ex.targets))
    batch = collate(examples[:3], pack=True, capacity=256, pad_id=tiny_tok.pad_token_id)
    with torch.no_grad():  # the fallback reproduces the model's own loss, whatever its head does
        assert NaiveLMLoss(tiny_lm)(**batch.inputs).item() == pytest.approx(_naive_sum(tiny_lm, examples[:3]).item(),
                                                                           rel=1e-5)


def test_auto_precision_on_cpu_is_bf16_only_with_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    import babeltune.hardware
    from babeltune.train.routine import resolve_precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(babeltune.hardware, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", cpu) is None  # emulated bf16 (AVX-512 only): slower than float32
    assert resolve_precision("bf16", cpu) is torch.bfloat16 and resolve_precision("fp32", cpu) is None
    monkeypatch.setattr(babeltune.hardware, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", cpu) is torch.bfloat16
