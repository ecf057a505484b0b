"""`babeltune run EXP --worker`: several processes share one grid through claim files; a dead worker's
condition is taken over; a plain run afterwards finds everything done and writes the results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from test_experiments import FakePipeline, experiment

from babeltune.config import dump_yaml
from babeltune.data import ChatRecord
from babeltune.experiments.claims import Claims, ClaimSettings
from babeltune.experiments.config import ExperimentConfig, load_experiment
from babeltune.experiments.results import read_results
from babeltune.experiments.runner import run_experiment

TESTS = Path(__file__).parent
EXTRA = {"mono-en": "", "mono-es": " more", "mono-sw": " more more", "pinch": " much more words"}


class CountingPipeline(FakePipeline):
    """The fake stages, logging every training to a file shared by processes (one O_APPEND write per
    line); training `block_on` hangs after saying so (to be killed)."""

    def __init__(self, log: Path, train_seconds: float = 0.0, block_on: str | None = None) -> None:
        super().__init__()
        self.log, self.train_seconds, self.block_on = log, train_seconds, block_on

    def _note(self, text: str) -> None:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, f"{text} {os.getpid()}\n".encode())
        os.close(fd)

    def train(self, config: Any, condition: Any, mixture: Path, out_dir: Path) -> dict[str, Any]:
        self._note(f"begin {condition.name}")
        if condition.name == self.block_on:
            time.sleep(600)
        time.sleep(self.train_seconds)
        info = super().train(config, condition, mixture, out_dir)
        self._note(f"end {condition.name}")
        return info

    def generate(self, config: Any, model: str, records: Sequence[ChatRecord], out: Path) -> dict[str, Any]:
        name = Path(model).parent.name
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"id": r.id, "pid": r.pid, "lang": r.lang, "prompt": r.prompt, "response": f"answer{EXTRA[name]}",
                 "reference": r.response, "error": None, "finish_reason": "stop"} for r in records]
        out.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return {"rows": len(rows)}


def worker_main(config_path: str, run_dir: str, log: str, train_seconds: float, block_on: str | None,
                heartbeat: float, stale_after: float) -> None:
    """What each worker process runs (the test starts it with `python -c`)."""
    run_experiment(load_experiment(config_path), run_dir, CountingPipeline(Path(log), train_seconds, block_on),
                   progress=False, worker=True, claims=ClaimSettings(heartbeat, stale_after))


def start_worker(tmp_path: Path, run_dir: Path, *, train_seconds: float = 0.0, block_on: str | None = None,
                 heartbeat: float = 0.2, stale_after: float = 2.0) -> subprocess.Popen[str]:
    args = (str(tmp_path / "exp.yaml"), str(run_dir), str(tmp_path / "calls.log"), train_seconds, block_on,
            heartbeat, stale_after)
    code = (f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(TESTS.parent)!r}]\n"
            f"from test_experiment_workers import worker_main\nworker_main(*{args!r})\n")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def four_conditions(tmp_path: Path) -> ExperimentConfig:
    cfg = experiment(tmp_path, conditions=[
        {"name": "mono-{lang}", "mixture": {"recipe": "monolingual"}, "vary": {"mixture.lang": ["en", "es", "sw"]}},
        {"name": "pinch", "mixture": {"recipe": "pinch", "pinch_count": 2}}],
        judge={"kind": "reference", "reference": "mono-{lang}"})
    dump_yaml(cfg, tmp_path / "exp.yaml")
    return cfg


def trainings(log: Path) -> Counter[str]:
    return Counter(" ".join(line.split()[:2]) for line in log.read_text().splitlines())


def rows_of(run_dir: Path) -> list[dict[str, Any]]:
    return [r.to_dict() for r in read_results(run_dir)[0]]


def single_process_rows(tmp_path: Path, cfg: ExperimentConfig) -> list[dict[str, Any]]:
    run_experiment(cfg, tmp_path / "single", CountingPipeline(tmp_path / "single.log"), progress=False, report=False)
    return rows_of(tmp_path / "single")


def finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    return out


def test_two_workers_share_a_grid_and_match_one_process(tmp_path: Path) -> None:
    cfg = four_conditions(tmp_path)
    expected = single_process_rows(tmp_path, cfg)
    shared = tmp_path / "shared"
    workers = [start_worker(tmp_path, shared, train_seconds=2.0) for _ in range(2)]
    for proc in workers:
        finish(proc)
    counts = trainings(tmp_path / "calls.log")
    assert {k: v for k, v in counts.items() if k.startswith("end")} == {f"end {c}": 1 for c in EXTRA}
    pids = {line.split()[2] for line in (tmp_path / "calls.log").read_text().splitlines()}
    assert len(pids) == 2  # both workers trained
    for name in EXTRA:  # every condition's judging was done by a worker
        assert (shared / "conditions" / name / "judge" / "reference.jsonl").exists()
        assert (shared / "claims" / f"{name}@judge.done").exists()
    assert not list((shared / "claims").glob("*.claim"))  # all released
    final = CountingPipeline(tmp_path / "final.log")
    summary = run_experiment(cfg, shared, final, progress=False, report=False)
    assert not (tmp_path / "final.log").exists() and summary.ran == []  # nothing left to do
    assert rows_of(shared) == expected


def test_killed_workers_condition_is_taken_over_and_finished(tmp_path: Path) -> None:
    cfg = four_conditions(tmp_path)
    expected = single_process_rows(tmp_path, cfg)
    shared = tmp_path / "shared"
    doomed = start_worker(tmp_path, shared, block_on="mono-es", stale_after=1.5)
    log = tmp_path / "calls.log"
    deadline = time.time() + 120
    while "begin mono-es" not in (log.read_text() if log.exists() else ""):
        assert time.time() < deadline and doomed.poll() is None, doomed.stdout.read() if doomed.stdout else ""
        time.sleep(0.1)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    claims = Claims(shared, ClaimSettings(0.2, 1.5))
    claim = json.loads(claims.claim_path("mono-es").read_text())
    assert claim["pid"] == doomed.pid and {"host", "started", "token"} <= set(claim)
    while (claims.age("mono-es") or 0) <= 1.5:  # its heartbeat has stopped: the claim goes stale
        time.sleep(0.1)
    assert claims.live_claims() == {}
    out = finish(start_worker(tmp_path, shared, stale_after=1.5))
    assert "mono-es" in out
    assert len(list((shared / "claims").glob("mono-es.claim.stale-*"))) == 1
    counts = trainings(log)
    assert counts["begin mono-es"] == 2 and counts["end mono-es"] == 1
    assert {k: v for k, v in counts.items() if k.startswith("end")} == {f"end {c}": 1 for c in EXTRA}
    run_experiment(cfg, shared, CountingPipeline(tmp_path / "final.log"), progress=False, report=False)
    assert rows_of(shared) == expected


def test_live_claims_stop_a_plain_run_and_are_not_taken(tmp_path: Path) -> None:
    cfg = four_conditions(tmp_path)
    claims = Claims(tmp_path / "run", ClaimSettings(0.2, 30.0))
    with claims.try_claim("pinch") as held:
        assert held is not None and claims.try_claim("pinch") is None  # live: not taken over
        with pytest.raises(RuntimeError, match=r"workers are still running.*pinch"):
            run_experiment(cfg, tmp_path / "run", CountingPipeline(tmp_path / "x.log"), progress=False)
        time.sleep(0.5)
        assert claims.age("pinch") is not None and claims.age("pinch") < 0.5  # the heartbeat touches it
    assert not claims.claim_path("pinch").exists()
    run_experiment(cfg, tmp_path / "run", CountingPipeline(tmp_path / "x.log"), progress=False, report=False)


def test_worker_flags_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from babeltune.cli import main

    four_conditions(tmp_path)
    assert main(["run", str(tmp_path / "exp.yaml"), "--worker", "--heartbeat", "60", "--stale-after", "30"]) == 2
    assert "--stale-after (30.0 s) must be longer than --heartbeat" in capsys.readouterr().err
