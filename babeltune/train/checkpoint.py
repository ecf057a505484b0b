"""Checkpoints that let a killed run continue exactly where it stopped.

A checkpoint is a folder `RUN/checkpoints/step-NNNNNN/` with

- `trainable.safetensors`: the trained parameters only (a LoRA adapter, or every weight), by name;
- `optimizer.pt`, `scheduler.pt`: their state dicts;
- `rng-rank{R}.pt`: each process's Python, NumPy, torch (and CUDA) random states;
- `state.json`: the step (the data position: the data order is a function of the step), the config
  fingerprint, the world size and any extra state a recipe adds.

It is written under a temporary name and renamed into place, then `RUN/checkpoints/latest` is
replaced atomically, so a kill at any moment leaves either the previous or the new checkpoint, never a
half-written one. Whether a run folder holds one, and which a resume continues from:
`babeltune.train.runfolder`.
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

from babeltune.train.runfolder import LATEST, CheckpointError, read_checkpoint_state


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


def _load_plain(file: Path, device: torch.device | str = "cpu") -> Any:
    """torch.load of tensors and plain containers only: a pickled object is refused, not run."""
    try:
        return torch.load(file, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{file}: holds pickled objects, not only tensors and plain values; refusing to "
                              f"load it ({str(exc).splitlines()[0]})") from exc


def _check_optimizer_shapes(optimizer: Any, params: dict[str, nn.Parameter], file: Path) -> None:
    """Every per-parameter state tensor (AdamW's moments) must have its parameter's shape."""
    names = {id(p): n for n, p in params.items()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise CheckpointError(
                        f"{file}: state {key!r} of parameter {names.get(id(param), '?')!r} has shape "
                        f"{tuple(value.shape)}, the parameter has {tuple(param.shape)}; the checkpoint does not "
                        "belong to this model")


def load_checkpoint(path: Path, *, model: nn.Module, optimizer: Any, scheduler: Any, rank: int = 0,
                    device: torch.device | str = "cpu") -> CheckpointState:
    """Restore parameters, optimizer, scheduler and this process's random state from `path`."""
    from safetensors.torch import load_file

    state = read_checkpoint_state(path)
    weights = path / "trainable.safetensors"
    try:
        saved = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        raise CheckpointError(f"{weights}: cannot be read ({exc}); the checkpoint is damaged") from exc
    params = dict(model.named_parameters())
    missing = sorted(set(n for n, p in params.items() if p.requires_grad) - set(saved))
    unknown = sorted(set(saved) - set(params))
    if missing or unknown:
        raise CheckpointError(f"{path}: parameters do not match the model (missing {missing[:3]}, "
                              f"unexpected {unknown[:3]}); was it written by a different model or method?")
    for name, value in saved.items():
        if value.shape != params[name].shape:
            raise CheckpointError(f"{weights}: tensor {name!r} has shape {tuple(value.shape)}, the model's has "
                                  f"{tuple(params[name].shape)}; was it written by a different model or LoRA rank?")
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    try:
        optimizer.load_state_dict(_load_plain(path / "optimizer.pt", device))
    except (KeyError, TypeError, ValueError) as exc:  # torch's own checks of the groups and their sizes
        raise CheckpointError(f"{path / 'optimizer.pt'}: does not fit the optimizer ({exc})") from exc
    _check_optimizer_shapes(optimizer, params, path / "optimizer.pt")
    scheduler.load_state_dict(_load_plain(path / "scheduler.pt"))
    rng_file = path / f"rng-rank{rank}.pt"
    if not rng_file.exists():
        raise CheckpointError(f"{rng_file} is missing: resume with as many processes as the run had "
                              f"({state.get('world_size')})")
    set_rng_state(_load_plain(rng_file))
    return CheckpointState(step=int(state["step"]), path=path, extra=dict(state.get("extra", {})))
