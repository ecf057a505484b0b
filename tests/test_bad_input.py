"""Bad input and faults, one row each: every command ends with a clear error (exit status, the file and
line, field or flag named, no traceback) or handles the input correctly, and no row is lost.

Commands run in-process through `babeltune.cli.main`: an exception escaping it (what a user would see as
a traceback) fails the row. Where a model is needed it is the tiny test model, or a path that does not
exist: a row that names `--out` with such a model proves the output is checked before any model loads.
The generate / endpoint / serve / judge faults are in tests/test_bad_input_generate.py.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from babeltune.cli import main
from tests.conftest import make_parallel

GOOD = [json.dumps(r, ensure_ascii=False).encode() for r in make_parallel(3, ("en",))]
NO_MODEL = "/nonexistent/model"  # loading it would fail: an --out error instead shows the check ran first


def record(**changes: Any) -> bytes:
    return json.dumps({**make_parallel(9, ("en",))[8], **changes}).encode()


@dataclass
class Ran:
    code: int
    out: str
    err: str


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Ran:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)


# --------------------------------------------------------------------------- data files, line by line
# (name, the bad line, its kind, what the message must say). The bad line is line 2 of 4.
BAD_LINES: list[tuple[str, bytes, str, str]] = [
    ("truncated line", GOOD[0][:40], "malformed", "field '<line>': not valid JSON"),
    ("wrong type", record(messages="hello"), "bad_messages", "field 'messages': must be a non-empty list"),
    ("unknown language", record(lang="xx"), "unknown_language", "field 'lang': unknown language code 'xx'"),
    ("duplicate id", GOOD[0], "duplicate_id", "field 'id': duplicate id 'p000-en'"),
    ("non-UTF-8 byte", record(id="caf\xe9").replace(b"\\u00e9", b"\xe9"), "not_utf8",
     "not UTF-8 text (byte 0xe9"),
    ("deep nesting", b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "too_deep", "nested too deeply"),
    ("lone surrogate", record(id="x\ud800"), "lone_surrogate", "id: a lone UTF-16 surrogate"),
    ("NaN", record(meta={"score": float("nan")}), "non_finite", "NaN is not a finite number"),
    ("Infinity", record(meta={"score": float("inf")}), "non_finite", "Infinity is not a finite number"),
]
NAN_LINE = next(bad for name, bad, _, _ in BAD_LINES if name == "NaN")


def data_file(tmp_path: Path, bad: bytes) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join([GOOD[0], bad, GOOD[1], GOOD[2]]) + b"\n")
    return path


@pytest.mark.parametrize("name, bad, kind, says", BAD_LINES, ids=[row[0] for row in BAD_LINES])
def test_bad_line_stops_the_read_naming_file_line_and_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, bad: bytes, kind: str, says: str) -> None:
    path = data_file(tmp_path, bad)
    for argv in (["data", "validate", str(path)], ["data", "stats", str(path)]):
        ran = run(argv, capsys)
        assert ran.code == 2 and "Traceback" not in ran.err
        assert f"{path}:2: " in ran.err and says in ran.err, ran.err


@pytest.mark.parametrize("name, bad, kind, says", BAD_LINES, ids=[row[0] for row in BAD_LINES])
def test_skip_invalid_counts_the_row_per_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, bad: bytes, kind: str, says: str) -> None:
    ran = run(["data", "validate", str(data_file(tmp_path, bad)), "--skip-invalid"], capsys)
    assert ran.code == 1 and "Traceback" not in ran.err  # 1: something was rejected
    assert "3 of 4 rows kept; rejected 1" in ran.out and f"({kind}: 1)" in ran.out  # every row accounted for
    assert f"[{kind}] " in ran.out and "data.jsonl:2: " in ran.out


@pytest.mark.parametrize("content", [
    pytest.param("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in make_parallel(2, ("es",))).replace(
        "¿", "\xbf").encode("latin-1", errors="replace"), id="Latin-1 file"),
    pytest.param(bytes(range(256)) * 4, id="binary file"),
])
def test_whole_file_in_the_wrong_encoding(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          content: bytes) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    ran = run(["data", "validate", str(path)], capsys)
    assert ran.code == 2 and "Traceback" not in ran.err
    assert f"{path}:1: field '<line>': " in ran.err and ("not UTF-8" in ran.err or "binary data" in ran.err)
    skipped = run(["data", "validate", str(path), "--skip-invalid"], capsys)
    assert skipped.code == 1 and "0 of " in skipped.out and "rejected" in skipped.out


# --------------------------------------------------------------------------- commands
@dataclass
class Case:
    """One bad command: `make(tmp, model)` writes what it needs and returns the argv; the message must hold
    every string of `says` (after `{tmp}` is filled in) and none of `not_says`."""

    name: str
    make: Callable[[Path, Path], list[str]]
    says: tuple[str, ...]
    code: int = 2
    not_says: tuple[str, ...] = ()


def _write(path: Path, text: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def _mix(tmp: Path) -> str:
    return _write(tmp / "mix.jsonl", b"\n".join(GOOD) + b"\n")


def _build(tmp: Path, *extra: str) -> list[str]:
    return ["data", "build", "--source", "bundled:train", "--recipe", "uniform", "--budget", "4", *extra]


def _gens(tmp: Path) -> str:
    row = {"id": "a-en", "pid": "a", "lang": "en", "prompt": "hi", "response": "hello", "finish_reason": "stop",
           "error": None}
    return _write(tmp / "g.jsonl", json.dumps(row) + "\n")


def _results(tmp: Path, text: str) -> str:
    _write(tmp / "run" / "results.json", text)
    return str(tmp / "run")


CASES = [
    # sources
    Case("hf: json file datasets cannot read", lambda t, m: ["data", "validate", "hf:" + _write(
        t / "broken.json", '{"lang": "en"\n')], ("hf:", "broken.json:1: field '<line>': not valid JSON")),
    Case("missing source", lambda t, m: ["data", "validate", str(t / "none.jsonl")],
         ("data source not found", "none.jsonl")),
    # data build
    Case("data build --out is a folder", lambda t, m: _build(t, "--out", str(t)), ("--out {tmp}: is a folder",)),
    Case("data build --out below a file", lambda t, m: _build(t, "--out", _mix(t) + "/x.jsonl"),
         ("--out {tmp}/mix.jsonl/x.jsonl", "mix.jsonl is a file")),
    Case("pinch of 1% of 10 rounds to 0", lambda t, m: ["data", "build", "--source", "bundled:train", "--recipe",
         "pinch", "--pinch-percent", "1", "--budget", "10", "--out", str(t / "p.jsonl")],
         ("a pinch of 1% of a budget of 10", "rounds to 0", "at least 51", "above 5")),
    Case("pinch percent NaN", lambda t, m: ["data", "build", "--source", "bundled:train", "--recipe", "pinch",
         "--pinch-percent", "nan", "--budget", "10", "--out", str(t / "p.jsonl")],
         ("--pinch-percent", "must be a finite number", "nan")),
    # configuration: the YAML file, an override or a flag is named, whichever set the bad value
    Case("bad YAML key", lambda t, m: ["train", "--config", _write(t / "c.yaml", "lr: 1e-3\nnosuch: 1\n")],
         ("{tmp}/c.yaml: unknown key(s) nosuch",)),
    Case("YAML syntax", lambda t, m: ["train", "--config", _write(t / "c.yaml", "lr: [1\n")],
         ("{tmp}/c.yaml: not valid YAML",)),
    Case("bad override value", lambda t, m: ["train", "--config", _write(t / "c.yaml", "lr: 1e-3\n"), "lr=abc"],
         ("override 'lr=abc': lr must be a number",), not_says=("c.yaml",)),
    Case("override of an unknown key", lambda t, m: ["train", "--config", _write(t / "c.yaml", "lr: 1e-3\n"),
         "lora.rank=4"], ("override 'lora.rank=4': unknown key(s) lora.rank",), not_says=("c.yaml",)),
    Case("override that fails validation", lambda t, m: ["train", "--config", _write(t / "c.yaml", "lr: 1e-3\n"),
         "lora.dropout=2"], ("override 'lora.dropout=2'", "dropout"), not_says=("c.yaml",)),
    Case("--set of a bad value", lambda t, m: ["generate", "--config", _write(t / "g.yaml", "model: x\n"),
         "--set", "decoding.top_k=many", "--out", str(t / "o.jsonl")],
         ("--set 'decoding.top_k=many'", "must be an integer"), not_says=("g.yaml",)),
    Case("run --set of a bad value", lambda t, m: ["run", "demo-quick", "--set", "seed=abc", "--list"],
         ("--set 'seed=abc'", "must be an integer")),
    Case("train --set of a bad value", lambda t, m: ["train", "--config", _write(t / "c.yaml", "lr: 1e-3\n"),
         "--set", "lr=abc"], ("--set 'lr=abc': lr must be a number",), not_says=("c.yaml",)),
    Case("--steer-layers that are not integers", lambda t, m: ["lens", "steer", "--steer", str(t), "--steer-layers",
         "top,-1", "--prompt", "en:hello", "--model", NO_MODEL], ("--steer-layers", "must be an integer", "'top'")),
    Case("--steer-mode without --steer", lambda t, m: ["lens", "mc-eval", "--data", _write(t / "mc.jsonl", ""),
         "--steer-mode", "project", "--model", NO_MODEL], ("--steer-mode", "subspace is required")),
    Case("NaN learning rate", lambda t, m: ["train", "--model", str(m), "--data", _mix(t), "--out", str(t / "r"),
         "lr=nan"], ("override 'lr=nan': lr must be a finite number",)),
    Case("NaN temperature", lambda t, m: ["generate", "--model", str(m), "--out", str(t / "o.jsonl"),
         "--temperature", "nan"], ("--temperature", "must be a finite number")),
    Case("infinite top_p", lambda t, m: ["generate", "--model", str(m), "--out", str(t / "o.jsonl"), "--set",
         "decoding.top_p=.inf"], ("--set 'decoding.top_p=.inf'", "must be a finite number")),
    Case("NaN steering coefficient", lambda t, m: ["lens", "steer", "--steer", str(t), "--steer-coefficient", "nan",
         "--prompt", "en:hello", "--model", NO_MODEL], ("--steer-coefficient", "must be a finite number")),
    Case("--per-language 0", lambda t, m: ["generate", "--model", str(m), "--out", str(t / "o.jsonl"),
         "--per-language", "0"], ("--per-language", "at least 1")),
    Case("--per-language -1", lambda t, m: ["model", "render", "--model", str(m), "--per-language", "-1"],
         ("--per-language", "at least 1")),
    Case("per_language=0 in the config", lambda t, m: ["generate", "--model", str(m), "--out", str(t / "o.jsonl"),
         "--set", "per_language=0"], ("--set 'per_language=0'", "at least 1"), not_says=("--out",)),
    # models and runs
    Case("a file as --model", lambda t, m: ["model", "info", "--model", "/etc/passwd"],
         ("'/etc/passwd': it is a file",)),
    Case("a folder that holds no model", lambda t, m: ["model", "info", "--model", str(t)],
         ("cannot load model folder '{tmp}'",)),
    Case("--resume without a run folder", lambda t, m: ["train", "--resume"], ("--resume", "--out RUN_DIR")),
    Case("--resume of a folder that does not exist", lambda t, m: ["train", "--resume", "--out", str(t / "gone")],
         ("--resume --out {tmp}/gone: no such run folder",)),
    Case("--resume of a folder that holds no run", lambda t, m: ["train", "--resume", "--out", str(t)],
         ("--resume --out {tmp}: the folder holds no config.yaml",)),
    Case("report on a results.json that is []", lambda t, m: ["report", _results(t, "[]")],
         ("{tmp}/run/results.json: field 'rows'",)),
    Case("report on a results.json that is not JSON", lambda t, m: ["report", _results(t, "{")],
         ("{tmp}/run/results.json: not a results table",)),
    # --out, checked before any model is loaded (the model does not exist)
    Case("generate --out is a folder", lambda t, m: ["generate", "--model", NO_MODEL, "--out", str(t)],
         ("--out {tmp}: is a folder",)),
    Case("train --out is a file", lambda t, m: ["train", "--model", NO_MODEL, "--data", _mix(t), "--out", _mix(t)],
         ("--out {tmp}/mix.jsonl: is a file",)),
    Case("eval --out is a file", lambda t, m: ["eval", "--generations", _gens(t), "--out", _gens(t)],
         ("--out {tmp}/g.jsonl: is a file",)),
    Case("report --out is a folder", lambda t, m: ["report", _results(t, '{"rows": []}'), "--out", str(t)],
         ("--out {tmp}: is a folder",)),
    Case("lens probe --out is a file", lambda t, m: ["lens", "probe", "--model", NO_MODEL, "--data",
         "bundled:train", "--out", _mix(t)], ("--out {tmp}/mix.jsonl: is a file",)),
    Case("lens mc-eval --out is a folder", lambda t, m: ["lens", "mc-eval", "--model", NO_MODEL, "--data", _mix(t),
         "--out", str(t)], ("--out {tmp}: is a folder",)),
    Case("judge --out is a file", lambda t, m: ["judge", "sxs", "--candidate", _gens(t), "--baseline", _gens(t),
         "--out", _gens(t)], ("--out {tmp}/g.jsonl: is a file",)),
    Case("run --out is a file", lambda t, m: ["run", "demo-quick", "--out", _mix(t)],
         ("--out {tmp}/mix.jsonl: is a file",)),
    Case("demo --out below a file", lambda t, m: ["demo", "--quick", "--out", _mix(t) + "/run"],
         ("--out {tmp}/mix.jsonl/run", "mix.jsonl is a file")),
]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.train_helpers import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_command_gives_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        tiny_model_dir: Path, case: Case) -> None:
    ran = run(case.make(tmp_path, tiny_model_dir), capsys)
    assert ran.code == case.code, ran.err
    assert "Traceback" not in ran.err
    message = ran.err[ran.err.rfind("error:"):]  # the error, without the log lines before it
    for text in case.says:
        assert text.format(tmp=tmp_path) in message, message
    for text in case.not_says:
        assert text not in message, message


# --------------------------------------------------------------------------- faults beyond a table row
def test_a_target_that_is_not_a_regular_file_is_refused_and_left_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Like /dev/full: the atomic write would rename a regular file over it. A pipe stands in for the
    device, so that a regression cannot replace a real device node on the machine running the tests."""
    pipe = tmp_path / "full"
    os.mkfifo(pipe)
    ran = run(_build(tmp_path, "--out", str(pipe)), capsys)
    assert ran.code == 2 and f"--out {pipe}: exists and is not a regular file" in ran.err
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_folder_as_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        ran = run(_build(tmp_path, "--out", str(folder / "m.jsonl")), capsys)
    finally:
        folder.chmod(0o700)
    assert ran.code == 2 and f"--out {folder}/m.jsonl: folder {folder} is not writable" in ran.err


def test_a_failed_write_leaves_no_tmp_file_and_the_old_file_intact(tmp_path: Path) -> None:
    from babeltune.data import read_records, write_jsonl

    target = tmp_path / "mix.jsonl"
    records = read_records(_mix(tmp_path))
    write_jsonl(records, target)
    before = target.read_bytes()

    def failing() -> Any:
        yield records[0]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_jsonl(failing(), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mix.jsonl"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """One step of training on data with a NaN line, skipped (skip_invalid=true)."""
    folder = tmp_path_factory.mktemp("trained")
    data = _write(folder / "mix.jsonl", b"\n".join([GOOD[0], NAN_LINE, *GOOD[1:]]) + b"\n")
    run_dir = folder / "run"
    assert main(["train", "--model", str(tiny_model_dir), "--data", data, "--out", str(run_dir), "max_steps=1",
                 "skip_invalid=true", "progress=false", "tensorboard=false", "precision=fp32",
                 "peak_tflops=0.1"]) == 0
    return run_dir


def test_training_counts_the_rows_it_skipped(trained_run: Path) -> None:
    read = json.loads((trained_run / "data_report.json").read_text())["read"]
    assert (read["rows"], read["kept"], read["rejected"]) == (4, 3, {"non_finite": 1})


def test_a_wrong_shaped_tensor_in_a_checkpoint_names_file_and_tensor(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], trained_run: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    weights = run_dir / "checkpoints" / "step-000001" / "trainable.safetensors"
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name][:1]
    save_file(tensors, str(weights))
    (run_dir / "result.json").unlink()
    ran = run(["train", "--resume", "--out", str(run_dir)], capsys)
    assert ran.code == 2 and "Traceback" not in ran.err
    assert f"{weights}: tensor {name!r} has shape (1," in ran.err and "the model's has" in ran.err
