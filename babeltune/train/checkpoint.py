"""Checkpoints that let a killed run continue exactly where it stopped.

A checkpoint is a folder `RUN/checkpoints/step-NNNNNN/` with

- `trainable.safetensors`: the trained parameters only (a LoRA adapter, or every weight), by name;
- `optimizer.pt`, `scheduler.pt`: their state dicts;
- `rng-rank{R}.pt`: each process's Python, NumPy, torch (and CUDA) random states;
- `state.json`: the step (the data position: the data order is a function of the step), the config
  fingerprint, the world size and any extra state a recipe adds.

It is written under a temporary name and renamed into place, then `RUN/checkpoints/latest` is
replaced atomically, so a kill at any moment leaves either the previous or the new checkpoint, never a
half-written one.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

LATEST = "latest"


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or belongs to a different configuration."""


@dataclass(frozen=True)
class CheckpointState:
    """What `load_checkpoint` restored."""

    step: int
    path: Path
    extra: dict[str, Any]


def rng_state() -> dict[str, Any]:
    """Every random generator's state, in types `torch.load(weights_only=True)` accepts (no pickled
    objects: a checkpoint folder from elsewhere cannot run code when resumed)."""
    kind, keys, pos, has_gauss, cached = cast("tuple[Any, ...]", np.random.get_state())
    state: dict[str, Any] = {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)),
                                                                       pos, has_gauss, cached],
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes, by name (contiguous CPU copies)."""
    return {name: p.detach().to("cpu").contiguous().clone() for name, p in model.named_parameters()
            if p.requires_grad}


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:06d}"


def save_checkpoint(
    run_dir: Path, step: int, *, model: nn.Module, optimizer: Any, scheduler: Any, fingerprint: str,
    rank: int = 0, world: int = 1, barrier: Any = None, keep: int = 1, extra: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint of `step` (every process calls this; `barrier` synchronises them).

    `model` is the unwrapped module whose trainable parameters are saved (names must match on load).
    """
    from safetensors.torch import save_file

    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    sync = barrier or (lambda: None)
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    sync()
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    if rank == 0:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        state = {"step": step, "fingerprint": fingerprint, "world_size": world, "extra": extra or {}}
        (tmp / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
    sync()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.replace(final)
        _write_atomic(run_dir / "checkpoints" / LATEST, final.name)
        _prune(run_dir / "checkpoints", keep)
    sync()
    return final


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _prune(folder: Path, keep: int) -> None:
    done = sorted(p for p in folder.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


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
    return dict(json.loads((path / "state.json").read_text(encoding="utf-8")))


def checkpoint_to_resume(run_dir: Path, fingerprint: str, numbers: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The latest checkpoint of `run_dir` and its state, refused unless it was written by a configuration
    with the same `fingerprint`; `numbers` (the fields behind the fingerprint) name what differs."""
    checkpoint = find_checkpoint(run_dir)
    state = read_checkpoint_state(checkpoint)
    if state.get("fingerprint") != fingerprint:
        saved = state.get("extra", {}).get("config", {})
        differ = sorted(k for k in set(saved) | set(numbers) if saved.get(k) != numbers.get(k))
        raise CheckpointError(
            f"{checkpoint} was written by a different configuration (differs in: {', '.join(differ) or 'unknown'}); "
            "resume with the same config, or start a new run in another --out folder"
        )
    return checkpoint, state


def _load_plain(file: Path, device: torch.device | str = "cpu") -> Any:
    """torch.load of tensors and plain containers only: a pickled object is refused, not run."""
    try:
        return torch.load(file, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{file}: holds pickled objects, not only tensors and plain values; refusing to "
                              f"load it ({str(exc).splitlines()[0]})") from exc


def load_checkpoint(path: Path, *, model: nn.Module, optimizer: Any, scheduler: Any, rank: int = 0,
                    device: torch.device | str = "cpu") -> CheckpointState:
    """Restore parameters, optimizer, scheduler and this process's random state from `path`."""
    from safetensors.torch import load_file

    state = read_checkpoint_state(path)
    saved = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = sorted(set(n for n, p in params.items() if p.requires_grad) - set(saved))
    unknown = sorted(set(saved) - set(params))
    if missing or unknown:
        raise CheckpointError(f"{path}: parameters do not match the model (missing {missing[:3]}, "
                              f"unexpected {unknown[:3]}); was it written by a different model or method?")
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    optimizer.load_state_dict(_load_plain(path / "optimizer.pt", device))
    scheduler.load_state_dict(_load_plain(path / "scheduler.pt"))
    rng_file = path / f"rng-rank{rank}.pt"
    if not rng_file.exists():
        raise CheckpointError(f"{rng_file} is missing: resume with as many processes as the run had "
                              f"({state.get('world_size')})")
    set_rng_state(_load_plain(rng_file))
    return CheckpointState(step=int(state["step"]), path=path, extra=dict(state.get("extra", {})))
