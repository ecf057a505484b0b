"""What every run directory records so that it can be reproduced: config, seed, versions, data.

`write_run_info(run_dir, config=..., seed=..., data={...})` writes `run.json` (and `config.yaml`)
with the full resolved config, the seed, the versions of the packages that decide the numbers, the
platform, the babeltune git commit when run from a checkout, and fingerprints of the data read.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from babeltune.config import dump_yaml, to_dict

TRACKED_PACKAGES = ("babeltune", "torch", "transformers", "peft", "accelerate", "safetensors", "numpy",
                    "tokenizers", "datasets", "py3langid", "gguf")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide babeltune's numbers (None if absent)."""
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the babeltune checkout, if babeltune runs from one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_run_info(
    run_dir: str | Path, *, config: Any, seed: int | None, data: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `run.json` and `config.yaml` into `run_dir` (created if needed); returns run.json's path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = to_dict(config) if hasattr(config, "__dataclass_fields__") else config
    info = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
        "seed": seed,
        "config": cfg,
        "data": data or {},
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": git_commit(),
        **(extra or {}),
    }
    path = run_dir / "run.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)
    dump_yaml(cfg, run_dir / "config.yaml")
    return path
