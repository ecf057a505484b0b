"""Which examples each optimizer step uses, on which process, packed into which rows.

The data order is a pure function of (seed, epoch, step), so a resumed run, or the same run on a
different number of processes, sees exactly the same examples at every step:

1. epoch e visits the examples in `torch.randperm(n, seed + e)` order (or in file order);
2. step s takes the next `global_batch` examples of its epoch (the epoch's last step may be smaller);
3. the step's examples are cut into `grad_accum` micro-batches, and micro-batch m is split over the
   processes round-robin (process r takes every world_size-th example);
4. a micro-batch is packed (`pack_rows`) into rows without attention between its examples.

The loss of a step is normalised by the step's total number of supervised tokens over every process
(`StepPlan.global_items`), which the plan knows without communication, so gradient accumulation and
data parallelism give the same update as one big batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from babeltune.models.chat import IGNORE_INDEX
from babeltune.train.data import TrainExample


@dataclass(frozen=True)
class MicroBatch:
    """What one forward/backward pass consumes on one process."""

    inputs: dict[str, torch.Tensor]
    """Keyword arguments of the loss module's forward."""
    n_items: int
    """Loss items (supervised tokens) in this micro-batch."""
    n_tokens: int
    """Real (non-padding) input tokens."""
    n_padded: int
    """Input positions including padding (rows x row length)."""


@dataclass(frozen=True)
class StepPlan:
    """One optimizer step on this process."""

    step: int
    epoch: int
    micro_batches: list[MicroBatch]
    global_items: int
    """Supervised tokens of the step over all processes: the loss normaliser."""
    global_tokens: int
    """Real input tokens of the step over all processes (for tokens/s)."""
    global_examples: int
    example_lengths: tuple[int, ...]
    """Lengths of every example of the step (all processes), for attention FLOPs."""


@dataclass(frozen=True)
class DataSchedule:
    """How many steps a run has and which examples each step takes."""

    n_examples: int
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    seed: int
    shuffle: bool

    @classmethod
    def build(cls, n_examples: int, global_batch: int, epochs: int, max_steps: int | None, seed: int,
              shuffle: bool) -> DataSchedule:
        steps_per_epoch = math.ceil(n_examples / global_batch)
        total = max_steps if max_steps is not None else steps_per_epoch * epochs
        return cls(n_examples, global_batch, steps_per_epoch, total, seed, shuffle)

    def epoch_order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n_examples))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return [int(i) for i in torch.randperm(self.n_examples, generator=generator)]

    def step_examples(self, step: int, order: list[int] | None = None) -> tuple[int, list[int]]:
        """(epoch, example indices) of optimizer step `step` (0-based); `order` caches epoch_order."""
        epoch, within = divmod(step, self.steps_per_epoch)
        order = order if order is not None else self.epoch_order(epoch)
        return epoch, order[within * self.global_batch:(within + 1) * self.global_batch]


def shard_step(indices: Sequence[int], batch_size: int, grad_accum: int, rank: int, world: int) -> list[list[int]]:
    """This process's micro-batches of a step: up to grad_accum lists of example indices."""
    per_micro = batch_size * world
    # A micro-batch that is empty on every process (an epoch's short last step) is skipped by all of
    # them alike; one empty on this process only still runs (as a dummy) so DDP's collectives line up.
    used = min(grad_accum, math.ceil(len(indices) / per_micro))
    return [list(indices[m * per_micro:(m + 1) * per_micro][rank::world]) for m in range(used)]


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing: group example positions into rows of at most `capacity` tokens.

    Deterministic (ties keep the input order). An example longer than capacity gets a row of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def collate(examples: Sequence[TrainExample], *, pack: bool, capacity: int, pad_id: int) -> MicroBatch:
    """Tensors for the loss module: rows of concatenated examples, restarted position ids, and the flat
    index + target of every supervised position.

    Examples packed into one row do not attend to each other: each starts again at position 0, and
    transformers turns restarted position ids (with no attention mask) into a block-diagonal causal
    mask. Padding at a row's end is a segment of its own, after every real token, so nothing attends
    to it and it is never a target.
    """
    if not examples:  # an empty share of an epoch's last step: one pad token, nothing to predict
        return MicroBatch({
            "input_ids": torch.full((1, 1), pad_id, dtype=torch.long),
            "position_ids": torch.zeros((1, 1), dtype=torch.long),
            "target_index": torch.zeros(0, dtype=torch.long),
            "targets": torch.zeros(0, dtype=torch.long),
        }, n_items=0, n_tokens=0, n_padded=1)
    lengths = [len(ex) for ex in examples]
    rows = pack_rows(lengths, capacity) if pack else [[i] for i in range(len(examples))]
    width = max(sum(lengths[i] for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (R, T)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)  # (R, T)
    flat_targets = torch.full((len(rows) * width,), IGNORE_INDEX, dtype=torch.long)  # (R*T,)
    for r, row in enumerate(rows):
        offset = 0
        for i in row:
            ex = examples[i]
            n = len(ex)
            input_ids[r, offset:offset + n] = torch.tensor(ex.input_ids)
            position_ids[r, offset:offset + n] = torch.arange(n)
            start = r * width + offset
            flat_targets[start:start + n] = torch.tensor(ex.targets)
            offset += n
        position_ids[r, offset:] = torch.arange(width - offset)
    target_index = (flat_targets != IGNORE_INDEX).nonzero().squeeze(1)  # (N,)
    return MicroBatch(
        {"input_ids": input_ids, "position_ids": position_ids, "target_index": target_index,
         "targets": flat_targets[target_index]},
        n_items=int(target_index.numel()), n_tokens=sum(lengths), n_padded=len(rows) * width,
    )


class StepPlanner:
    """Builds this process's `StepPlan` for any step: the data position is just the step number."""

    def __init__(self, examples: Sequence[TrainExample], schedule: DataSchedule, *, batch_size: int,
                 grad_accum: int, rank: int, world: int, pack: bool, capacity: int, pad_id: int) -> None:
        self.examples = examples
        self.schedule = schedule
        self.batch_size, self.grad_accum = batch_size, grad_accum
        self.rank, self.world = rank, world
        self.pack, self.capacity, self.pad_id = pack, capacity, pad_id
        self._order: tuple[int, list[int]] | None = None

    def __call__(self, step: int) -> StepPlan:
        epoch = step // self.schedule.steps_per_epoch
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, self.schedule.epoch_order(epoch))
        epoch, indices = self.schedule.step_examples(step, self._order[1])
        chosen = [self.examples[i] for i in indices]
        shares = shard_step(indices, self.batch_size, self.grad_accum, self.rank, self.world)
        micro = [collate([self.examples[i] for i in share], pack=self.pack, capacity=self.capacity,
                         pad_id=self.pad_id) for share in shares]
        return StepPlan(
            step=step, epoch=epoch, micro_batches=micro,
            global_items=sum(ex.n_supervised for ex in chosen), global_tokens=sum(len(ex) for ex in chosen),
            global_examples=len(chosen), example_lengths=tuple(len(ex) for ex in chosen),
        )
