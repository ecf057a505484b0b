"""Claims: how several `babeltune run EXP --worker` processes share one run folder's grid.

A worker takes a unit of work (a condition, or one condition's judging) by creating
`RUN_DIR/claims/UNIT.claim` with O_CREAT | O_EXCL: atomic on local file systems and on NFS (v3 and
later), unlike fcntl locks, which NFS may not carry between machines. The file records the worker's
host, pid, start time and a random token; a background thread touches it (its mtime is the heartbeat)
every `heartbeat` seconds. A claim whose mtime is older than `stale_after` seconds belongs to a dead
worker: another one renames it away to `UNIT.claim.stale-HOST-PID-NS` (a rename is atomic, so only one
worker wins), checks that it moved the claim it judged stale, and claims the unit afresh; the unit's
stages then resume from their own caches. The clocks of the machines sharing a run folder must agree
to well within `stale_after` (NTP does that).

A finished unit is recorded as `UNIT.done` holding its fingerprint: a changed configuration makes it
pending again.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CLAIMS_DIR = "claims"


@dataclass(frozen=True)
class ClaimSettings:
    """Timing of claims (the `babeltune run --worker` flags)."""

    heartbeat: float = 30.0
    """Seconds between two touches of a held claim."""
    stale_after: float = 600.0
    """A claim untouched for this many seconds is a dead worker's, and taken over."""

    def __post_init__(self) -> None:
        if self.heartbeat <= 0:
            raise ValueError(f"--heartbeat must be > 0 seconds, got {self.heartbeat}")
        if self.stale_after <= self.heartbeat:
            raise ValueError(f"--stale-after ({self.stale_after} s) must be longer than --heartbeat "
                             f"({self.heartbeat} s)")


class Claim:
    """A held claim: its heartbeat runs until `release` (also on leaving a `with` block)."""

    def __init__(self, path: Path, token: str, heartbeat: float) -> None:
        self.path = path
        self.token = token
        self.lost = False
        """True once the claim file is no longer this worker's (taken over after a long stall)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat,), daemon=True,
                                        name=f"heartbeat {path.name}")
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            if not self.holds():
                self.lost = True
                log.warning("claim %s was taken over by another worker", self.path)
                return
            try:
                os.utime(self.path)
            except OSError as exc:
                log.warning("cannot touch claim %s: %s", self.path, exc)

    def holds(self) -> bool:
        """Whether the claim file still carries this worker's token."""
        info = read_claim(self.path)
        return info is not None and info.get("token") == self.token

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.holds():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_claim(path: Path) -> dict[str, Any] | None:
    """A claim file's record; None if it is gone or not (yet) complete."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Claims:
    """The claims folder of one run directory."""

    def __init__(self, run_dir: Path, settings: ClaimSettings | None = None) -> None:
        self.folder = Path(run_dir) / CLAIMS_DIR
        self.settings = settings or ClaimSettings()

    def claim_path(self, unit: str) -> Path:
        return self.folder / f"{unit}.claim"

    def done_path(self, unit: str) -> Path:
        return self.folder / f"{unit}.done"

    # ------------------------------------------------------------- done markers
    def is_done(self, unit: str, fp: str) -> bool:
        try:
            return self.done_path(unit).read_text(encoding="utf-8").strip() == fp
        except OSError:
            return False

    def mark_done(self, unit: str, fp: str) -> None:
        path = self.done_path(unit)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(fp + "\n", encoding="utf-8")
        tmp.replace(path)

    # ------------------------------------------------------------- claiming
    def age(self, unit: str) -> float | None:
        """Seconds since the claim's last heartbeat; None when unclaimed."""
        try:
            return time.time() - self.claim_path(unit).stat().st_mtime
        except FileNotFoundError:
            return None

    def live_claims(self) -> dict[str, dict[str, Any]]:
        """Units held by a worker whose heartbeat is recent: unit -> claim record."""
        out: dict[str, dict[str, Any]] = {}
        for path in sorted(self.folder.glob("*.claim")) if self.folder.exists() else []:
            unit = path.name.removesuffix(".claim")
            age = self.age(unit)
            if age is not None and age <= self.settings.stale_after:
                out[unit] = read_claim(path) or {}
        return out

    def try_claim(self, unit: str) -> Claim | None:
        """Claim `unit`, taking over a stale claim; None when a live worker holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        claim = self._create(unit)
        if claim is not None:
            return claim
        age = self.age(unit)
        if age is None:  # released meanwhile
            return self._create(unit)
        if age <= self.settings.stale_after or not self._take_over(unit):
            return None
        return self._create(unit)

    def _create(self, unit: str) -> Claim | None:
        path = self.claim_path(unit)
        token = secrets.token_hex(8)
        record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "token": token,
                  "heartbeat_s": self.settings.heartbeat}
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(record))
            handle.flush()
            os.fsync(handle.fileno())
        return Claim(path, token, self.settings.heartbeat)

    def _take_over(self, unit: str) -> bool:
        """Move a stale claim aside; False when another worker moved it first or it came alive."""
        path = self.claim_path(unit)
        seen = read_claim(path)
        aside = path.with_name(f"{path.name}.stale-{socket.gethostname()}-{os.getpid()}-{time.time_ns()}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        moved = read_claim(aside)
        if seen is None or moved is None or moved.get("token") != seen.get("token") or \
                time.time() - aside.stat().st_mtime <= self.settings.stale_after:
            # Another worker replaced the claim between our look and our rename: put it back.
            try:
                os.link(aside, path)
                aside.unlink()
            except FileExistsError:
                log.warning("claim %s changed hands while being taken over; left as %s", path, aside)
            return False
        log.warning("took over %s: its worker (%s pid %s) stopped sending heartbeats; moved to %s", unit,
                    seen.get("host"), seen.get("pid"), aside.name)
        return True
