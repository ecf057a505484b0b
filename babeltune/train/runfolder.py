"""What a run folder holds (fresh, resumable or finished) and the checkpoint a resume continues from.

Every training caller asks `run_status(folder)` and applies its own policy to the answer:
`babeltune train` refuses to start over a run unless told to resume, a sweep and an experiment reuse a
finished run of the same numbers, an experiment moves a run of other numbers aside, `babeltune lens
train` refuses a finished run. `RunStatus.resume_point` is the one place a resume is checked against
the configuration (naming the fields that differ).

A run's numbers are the configuration fields that change its results (`numbers_dict()` of a config);
their fingerprint is stored with every checkpoint and in `result.json`. No torch here: configs import it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

LATEST = "latest"
RunState = Literal["fresh", "resumable", "finished"]


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or belongs to a different configuration."""


def numbers_fingerprint(numbers: dict[str, Any]) -> str:
    """Hash of the fields that change a run's numbers: a resume (or a reuse) must match it."""
    return hashlib.sha256(json.dumps(numbers, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunStatus:
    """What `run_status` found in a run folder."""

    folder: Path
    state: RunState
    """fresh: neither checkpoints nor a result; resumable: checkpoints but no result (an interrupted run);
    finished: the result file is there."""
    result_file: Path
    """The file a finished run writes last (`result.json`; lens: `summary.json`)."""

    def resume_point(self, numbers: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
        """The latest checkpoint and its state, refused (CheckpointError) when there is none, or when it was
        written by a configuration with other `numbers` (naming the fields that differ)."""
        checkpoint = find_checkpoint(self.folder)
        state = read_checkpoint_state(checkpoint)
        if state.get("fingerprint") != numbers_fingerprint(numbers):
            saved = state.get("extra", {}).get("config", {})
            differ = sorted(k for k in set(saved) | set(numbers) if saved.get(k) != numbers.get(k))
            raise CheckpointError(
                f"{checkpoint} was written by a different configuration (differs in: "
                f"{', '.join(differ) or 'unknown'}); resume with the same config, or start a new run in another "
                "--out folder")
        return checkpoint, state

    def result(self) -> dict[str, Any]:
        """The finished run's record."""
        return dict(json.loads(self.result_file.read_text(encoding="utf-8")))

    def same_numbers(self, numbers: dict[str, Any]) -> bool:
        """Whether what the folder holds was written with these numbers: a finished run's recorded fingerprint,
        or a resumable run's latest readable checkpoint. A fresh folder holds nothing to differ."""
        fingerprint = numbers_fingerprint(numbers)
        if self.state == "finished":
            return self.result().get("fingerprint") == fingerprint
        if self.state == "resumable":
            try:
                return read_checkpoint_state(find_checkpoint(self.folder)).get("fingerprint") == fingerprint
            except (OSError, ValueError):
                return False
        return True


def run_status(folder: Path, result_name: str = "result.json") -> RunStatus:
    """Whether `folder` is fresh, holds an interrupted run (checkpoints) or a finished one (`result_name`)."""
    folder = Path(folder)
    result_file = folder / result_name
    if result_file.exists():
        state: RunState = "finished"
    elif (folder / "checkpoints").exists():
        state = "resumable"
    else:
        state = "fresh"
    return RunStatus(folder, state, result_file)


def find_checkpoint(path: Path) -> Path:
    """The checkpoint folder to resume from: `path` itself, or the latest one of a run folder."""
    if (path / "state.json").exists():
        return path
    latest = path / "checkpoints" / LATEST
    if latest.exists():
        found = path / "checkpoints" / latest.read_text(encoding="utf-8").strip()
        if (found / "state.json").exists():
            return found
    raise CheckpointError(f"{path}: no checkpoint to resume from (expected {latest} or a step-* folder); "
                          "run without --resume to start from scratch")


def read_checkpoint_state(path: Path) -> dict[str, Any]:
    """A checkpoint's `state.json`: its step, fingerprint, world size and a recipe's extra state."""
    file = path / "state.json"
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc}); the checkpoint is damaged: resume from an "
                              "earlier step-* folder or start a new run") from exc
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{file}: field 'step': missing; not a babeltune checkpoint state")
    return state
