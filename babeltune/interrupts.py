"""Interruptions a command turns into "run it again to resume". Light (no torch), so the command line
can recognise them without importing the training loop."""

from __future__ import annotations


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint of the last finished step was written."""

    def __init__(self, step: int, signum: int) -> None:
        super().__init__(f"training interrupted by signal {signum} after step {step}; resume with --resume")
        self.step = step
        self.signum = signum
