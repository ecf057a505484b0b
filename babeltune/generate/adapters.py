"""PEFT adapters loaded at run time onto the base model a `LocalBackend` holds (`babeltune serve
--enable-lora`): the base weights stay loaded once, every adapter is a named PEFT adapter on them, and
a batch is generated with exactly one of them active (or none, for the base).

Refusals carry vLLM's status codes for its dynamic LoRA routes: 404 when the path holds no adapter,
400 for a duplicate name, an adapter of another base model or one that does not load; 404 for
unloading a name that is not loaded. Not thread-safe: the server's worker thread, which also runs
generation, is the only caller of `load`, `unload` and `active`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babeltune.generate.local import LocalBackend, loaded_fingerprint
from babeltune.models.loading import ModelLoadError, model_fingerprint, peft_quietly


class AdapterError(ValueError):
    """A refused load or unload: `status` and `kind` as vLLM answers them."""

    def __init__(self, message: str, status: int = 400, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass(frozen=True)
class LoadedAdapter:
    name: str
    path: str
    fingerprint: str
    """Fingerprint of base + adapter (what the local backend reports for the same adapter)."""


class AdapterSet:
    """Named PEFT adapters on the base model of `backend` (see the module docstring)."""

    def __init__(self, backend: LocalBackend, base_path: str, served_name: str) -> None:
        self.backend = backend
        self.base_path = base_path
        self.served_name = served_name
        self.base_fingerprint = backend.fingerprint
        self._adapters: dict[str, LoadedAdapter] = {}
        self._lock = threading.Lock()  # guards the name table, read by handler threads

    def listed(self) -> list[LoadedAdapter]:
        with self._lock:
            return list(self._adapters.values())

    def get(self, name: str) -> LoadedAdapter | None:
        with self._lock:
            return self._adapters.get(name)

    def check_new(self, name: str, path: str) -> Path:
        """Refusals that need no model: an empty or taken name, a path without a PEFT adapter of the
        served base. Returns the adapter folder."""
        if not name or not path:
            raise AdapterError("Both 'lora_name' and 'lora_path' must be provided.", 400, "InvalidUserInput")
        if name == self.served_name or self.get(name) is not None:
            raise AdapterError(f"The lora adapter '{name}' has already been loaded.", 400, "InvalidUserInput")
        folder = Path(path)
        config_file = folder / "adapter_config.json"
        if not config_file.is_file():
            raise AdapterError(f"Loading lora {name} failed: No adapter found for {path} (no "
                               f"{config_file.name} there)", 404, "NotFoundError")
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AdapterError(f"Loading lora {name} failed: {config_file}: {exc}") from exc
        if not isinstance(config, dict):
            raise AdapterError(f"Loading lora {name} failed: {config_file} is not a JSON object")
        if config.get("peft_type") != "LORA":
            raise AdapterError(f"Loading lora {name} failed: {config_file}: peft_type is "
                               f"{config.get('peft_type')!r}, only LORA adapters are served")
        base = config.get("base_model_name_or_path")
        if not base:
            raise AdapterError(f"Loading lora {name} failed: {config_file} names no base_model_name_or_path")
        try:
            base_fingerprint = model_fingerprint(str(base))
        except (OSError, ModelLoadError) as exc:
            raise AdapterError(f"Loading lora {name} failed: its base {base!r} cannot be read: {exc}") from exc
        served = model_fingerprint(self.base_path)
        if base_fingerprint != served:
            raise AdapterError(
                f"Loading lora {name} failed: {path} is an adapter of {base!r} (fingerprint "
                f"{base_fingerprint[:16]}), but this server serves {self.base_path!r} (fingerprint {served[:16]})")
        return folder

    def load(self, name: str, path: str) -> LoadedAdapter:
        """Load the adapter at `path` under `name` (the server's worker thread only)."""
        folder = self.check_new(name, path)
        self._check_tokenizer(name, folder)
        model = self.backend.model
        try:
            with peft_quietly():
                if hasattr(model, "load_adapter") and hasattr(model, "peft_config"):
                    model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
                else:
                    from peft import PeftModel

                    model = PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=False)
        except Exception as exc:  # a corrupt or mismatched adapter is refused, the server goes on
            raise AdapterError(f"Loading lora {name} failed: {type(exc).__name__}: {exc}") from exc
        model.eval()
        self.backend.model = model
        loaded = LoadedAdapter(name, str(folder), loaded_fingerprint(self.base_path, str(folder)))
        with self._lock:
            self._adapters[name] = loaded
        return loaded

    def _check_tokenizer(self, name: str, folder: Path) -> None:
        """An adapter that brings its own tokenizer must render prompts as the served base does."""
        if not any((folder / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
            return
        from babeltune.models.chat import RenderError, get_template
        from babeltune.models.loading import load_tokenizer

        tokenizer = load_tokenizer(str(folder))
        mine = self.backend.tokenizer
        if len(tokenizer) != len(mine):
            raise AdapterError(f"Loading lora {name} failed: its tokenizer has {len(tokenizer)} tokens, the "
                               f"served base's {len(mine)}")
        try:
            theirs = get_template(tokenizer, "auto").describe()
        except RenderError as exc:
            raise AdapterError(f"Loading lora {name} failed: its chat template: {exc}") from exc
        if theirs != self.backend.template.describe():
            raise AdapterError(f"Loading lora {name} failed: its chat template ({theirs.get('name')}) differs from "
                               f"the one the server renders prompts with ({self.backend.template.name})")

    def unload(self, name: str) -> None:
        """Remove the adapter `name` (the server's worker thread only)."""
        if not name:
            raise AdapterError("'lora_name' needs to be provided to unload a LoRA adapter.", 400, "InvalidUserInput")
        with self._lock:
            if name not in self._adapters:
                raise AdapterError(f"The lora adapter '{name}' cannot be found.", 404, "NotFoundError")
            del self._adapters[name]
        model = self.backend.model
        with peft_quietly(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was active which is now deleted.*", category=UserWarning)
            model.delete_adapter(name)
            if not model.peft_config:  # none left: back to the plain base model
                self.backend.model = model.unload()

    @contextlib.contextmanager
    def active(self, name: str) -> Iterator[Any]:
        """The backend with adapter `name` active (the served name: no adapter) while the block runs."""
        model = self.backend.model
        peft = hasattr(model, "peft_config") and hasattr(model, "disable_adapter")
        if name == self.served_name:
            with model.disable_adapter() if peft else contextlib.nullcontext():
                yield self.backend
            return
        if self.get(name) is None or not peft:
            raise AdapterError(f"The model `{name}` does not exist.", 404, "NotFoundError")
        model.set_adapter(name)
        yield self.backend

    def fingerprint(self, name: str) -> str:
        adapter = self.get(name)
        return adapter.fingerprint if adapter is not None else self.base_fingerprint

