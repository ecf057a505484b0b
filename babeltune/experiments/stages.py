"""Which stages of a condition are finished, and with what inputs: the basis of skip-and-resume.

Each condition folder has `stages.json`: stage name -> {fingerprint, seconds, finished, info}. A stage
is written there only after it completed, atomically (temporary file + rename). On a re-run a stage is
skipped when its recorded fingerprint equals the one computed from its inputs now (config, data and the
fingerprints of the stages it reads from) and its outputs exist; otherwise it runs again, and the
stages after it follow because their fingerprints include its own. A stage interrupted half-way has no
record: it runs again, and its own cache (training checkpoints, the generation file, the judgement
file) lets it continue where it stopped rather than from scratch.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STAGES_FILE = "stages.json"


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-encodable parts."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class StageRecord:
    fingerprint: str
    seconds: float
    finished: float = field(default_factory=time.time)
    info: dict[str, Any] = field(default_factory=dict)


class StageLog:
    """The finished stages of one condition (or of the experiment, for cross-condition stages)."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / STAGES_FILE
        self.records: dict[str, StageRecord] = {}
        if self.path.exists():
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            self.records = {name: StageRecord(**rec) for name, rec in raw.items()}

    def done(self, stage: str, fp: str) -> StageRecord | None:
        """The record of `stage` if it finished with fingerprint `fp`, else None."""
        rec = self.records.get(stage)
        return rec if rec is not None and rec.fingerprint == fp else None

    def mark(self, stage: str, fp: str, seconds: float, info: dict[str, Any] | None = None) -> StageRecord:
        rec = StageRecord(fp, seconds, info=info or {})
        self.records[stage] = rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in self.records.items()}, indent=1, ensure_ascii=False,
                                  default=str), encoding="utf-8")
        tmp.replace(self.path)
        return rec
