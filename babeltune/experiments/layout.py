"""Where a run keeps what: the folder of each condition, and reading its generation files."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from babeltune.generate.rows import GenerationRow

log = logging.getLogger(__name__)


@dataclass
class ConditionPaths:
    root: Path

    @classmethod
    def of(cls, run_dir: Path, condition: str) -> ConditionPaths:
        return cls(run_dir / "conditions" / condition)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def mixture(self) -> Path:
        return self.root / "mixture.jsonl"

    @property
    def train(self) -> Path:
        return self.root / "train"

    def generations(self, split: str) -> Path:
        return self.root / "generations" / f"{split}.jsonl"

    @property
    def eval_rows(self) -> Path:
        return self.root / "eval" / "rows.json"

    @property
    def probe(self) -> Path:
        return self.root / "probe"

    @property
    def lens(self) -> Path:
        return self.root / "lens"

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    def judge_cache(self, kind: str) -> Path:
        return self.root / "judge" / f"{kind}.cache.jsonl"

    def judgements(self, kind: str) -> Path:
        return self.root / "judge" / f"{kind}.jsonl"


def read_generation_rows(path: Path) -> list[GenerationRow]:
    """A generation file's rows (strictly checked by the generation stage's reader); none if absent."""
    from babeltune.generate import read_generations

    return read_generations(path) if path.exists() else []


def move_aside(path: Path, why: str) -> Path:
    """Rename `path` (a file or folder of outdated results) to NAME.stale-N[.SUFFIX] beside it: kept,
    never deleted, and out of the way of a fresh run."""
    n = 1
    while (target := path.with_name(f"{path.stem}.stale-{n}{path.suffix}")).exists():
        n += 1
    log.warning("%s holds %s; moved to %s", path, why, target)
    path.rename(target)
    return target
