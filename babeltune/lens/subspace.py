"""Per-layer language subspaces, as study C's released probing code computes them.

For one layer, stack the language means as the columns of M (D x n). Then:

1. centre M by its row mean w, and keep the top-r SVD reconstruction M_hat = w 1^T + U_r S_r V_r^T;
2. common vector c = v / ||v||^2 with v = pinv(M_hat)^T 1. Since M_hat^T v = 1, every language mean
   has the same inner product with v: c is the point of the means' affine hull nearest to the origin,
   the part all languages share (one vector per layer, not a large subspace);
3. language-specific subspace M_s: the top-r left singular vectors of M_hat - c 1^T (r = n - 1 by
   default), stored as r orthonormal rows;
4. direction of language l: mean(P_s h_l) - mean(P_s h_central) = P_s (mean_l - mean_central), with
   P_s = M_s M_s^T the projection onto the subspace.

Computed in float64 (numpy), stored in float32. A `LanguageSubspace` keeps every layer, saves as
`subspace.safetensors` + `subspace.json` (metadata, including the model fingerprint) and refuses to be
used with a model whose fingerprint or shape differs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

SUBSPACE_FILE = "subspace.safetensors"
META_FILE = "subspace.json"
FORMAT_VERSION = 1


class SubspaceMismatchError(ValueError):
    """A subspace used with a model it was not probed on (fingerprint, layer count or hidden size)."""


def layer_subspace(means: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Common vector (D,) and language-specific basis (D, rank) of one layer from its means (D, n)."""
    dim, n = means.shape
    if n < 2:
        raise ValueError(f"a language subspace needs at least 2 languages, got {n}")
    if not 1 <= rank <= n - 1:
        raise ValueError(f"rank must be between 1 and n_languages - 1 = {n - 1}, got {rank}")
    if dim < n:
        raise ValueError(f"hidden size {dim} is smaller than the number of languages {n}")
    ones = np.ones(n)
    centre = means @ ones / n  # (D,)
    u, s, vt = np.linalg.svd(means - np.outer(centre, ones), full_matrices=False)
    fitted = np.outer(centre, ones) + (u[:, :rank] * s[:rank]) @ vt[:rank]  # (D, n), rank <= r + 1
    v = np.linalg.pinv(fitted).T @ ones  # (D,)
    common = v / (v @ v)
    u2, _, _ = np.linalg.svd(fitted - np.outer(common, ones), full_matrices=False)
    return common, u2[:, :rank]


@dataclass
class LanguageSubspace:
    """Every layer's language means, common vector, language-specific basis and language directions."""

    languages: tuple[str, ...]
    central: str
    means: torch.Tensor  # (L, n, D)
    common: torch.Tensor  # (L, D)
    specific: torch.Tensor  # (L, r, D), orthonormal rows
    directions: torch.Tensor  # (L, n, D)
    meta: dict[str, Any] = field(default_factory=dict)
    """model, fingerprint, pooling, template, counts per language, data fingerprints, ..."""

    @classmethod
    def from_means(cls, languages: Sequence[str], central: str, means: torch.Tensor, rank: int | None = None,
                   meta: dict[str, Any] | None = None) -> LanguageSubspace:
        """Build from per-layer language means (L, n, D); rank defaults to n - 1."""
        languages = tuple(languages)
        if central not in languages:
            raise ValueError(f"central language {central!r} is not among the probed languages {list(languages)}")
        n_layers, n, _ = means.shape
        rank = n - 1 if rank is None else rank
        commons, bases, directions = [], [], []
        centre_index = languages.index(central)
        for layer in range(n_layers):
            m = means[layer].double().numpy().T  # (D, n)
            common, basis = layer_subspace(m, rank)
            projected = basis @ (basis.T @ m)  # (D, n): P_s applied to every language mean
            commons.append(common)
            bases.append(basis.T)
            directions.append((projected - projected[:, [centre_index]]).T)  # (n, D)
        return cls(
            languages, central, means.float().clone(),
            torch.from_numpy(np.stack(commons)).float(), torch.from_numpy(np.stack(bases)).float(),
            torch.from_numpy(np.stack(directions)).float(), dict(meta or {}),
        )

    # -- shape ------------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return int(self.means.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.means.shape[2])

    @property
    def rank(self) -> int:
        return int(self.specific.shape[1])

    def lang_index(self, lang: str) -> int:
        if lang not in self.languages:
            raise ValueError(f"language {lang!r} was not probed; this subspace has {', '.join(self.languages)}")
        return self.languages.index(lang)

    # -- projections (work on any (..., D) tensor) -------------------------------------------------
    def project_specific(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """P_s h: the part of h in the layer's language-specific subspace."""
        basis = self.specific[layer].to(hidden.device, hidden.dtype)  # (r, D)
        return (hidden @ basis.T) @ basis

    def direction(self, lang: str, layer: int) -> torch.Tensor:
        """mean(P_s h_lang) - mean(P_s h_central) at `layer`: (D,)."""
        return self.directions[layer, self.lang_index(lang)]

    def digest(self) -> str:
        """A short content hash (languages, central language and every tensor): names this subspace in
        caches and logs."""
        import hashlib

        h = hashlib.sha256(json.dumps([list(self.languages), self.central]).encode())
        for tensor in (self.means, self.common, self.specific, self.directions):
            h.update(tensor.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    # -- checks -----------------------------------------------------------------------------------
    def check_model(self, model: Any, fingerprint: str | None = None) -> None:
        """Raise SubspaceMismatchError unless `model` has this subspace's shape (and fingerprint)."""
        from babeltune.lens.states import num_layers

        layers = num_layers(model)
        hidden = int(getattr(getattr(model, "config", None), "hidden_size", self.hidden_size))
        source = self.meta.get("model", "?")
        if (layers, hidden) != (self.n_layers, self.hidden_size):
            raise SubspaceMismatchError(
                f"subspace probed on {source} ({self.n_layers} layers, hidden size {self.hidden_size}) does not "
                f"fit this model ({layers} layers, hidden size {hidden}); probe this model with `babeltune lens "
                "probe --model ...`")
        saved = self.meta.get("fingerprint")
        if fingerprint is not None and saved and saved != fingerprint:
            raise SubspaceMismatchError(
                f"subspace probed on {source} (fingerprint {str(saved)[:12]}) but this model's fingerprint is "
                f"{fingerprint[:12]}: the subspace belongs to other weights; probe this model again "
                "(or allow it: --steer-allow-other-model, allow_other_model=true)")

    # -- files ------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write subspace.safetensors + subspace.json into `folder`; returns the folder."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = self.metadata()
        tensors = {"means": self.means, "common": self.common, "specific": self.specific,
                   "directions": self.directions}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / SUBSPACE_FILE),
                  metadata={"babeltune": json.dumps(meta, ensure_ascii=False)})
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return folder

    def metadata(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "languages": list(self.languages), "central": self.central,
                "n_layers": self.n_layers, "hidden_size": self.hidden_size, "rank": self.rank, **self.meta}

    @classmethod
    def load(cls, path: str | Path) -> LanguageSubspace:
        """Load from a folder written by `save` (or the .safetensors file inside it)."""
        from safetensors import safe_open

        path = Path(path)
        file = path / SUBSPACE_FILE if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"no language subspace at {path} (expected {SUBSPACE_FILE}; write one with "
                                    "`babeltune lens probe --out DIR`)")
        with safe_open(str(file), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
        if "babeltune" not in header:
            raise ValueError(f"{file}: not a babeltune language subspace (no babeltune metadata)")
        meta = json.loads(header["babeltune"])
        missing = {"means", "common", "specific", "directions"} - set(tensors)
        if missing:
            raise ValueError(f"{file}: missing tensor(s) {sorted(missing)}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{file}: format version {meta.get('format_version')} is not {FORMAT_VERSION}")
        extra = {k: v for k, v in meta.items()
                 if k not in ("format_version", "languages", "central", "n_layers", "hidden_size", "rank")}
        return cls(tuple(meta["languages"]), meta["central"], tensors["means"], tensors["common"],
                   tensors["specific"], tensors["directions"], extra)
