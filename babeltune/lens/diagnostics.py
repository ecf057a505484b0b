"""Which layers carry language identity: a table and a plot over layers, from held-out sentences.

Per layer, on sentences that were not used to compute the means:

- `specific_acc`: nearest-centroid language identification inside the language-specific subspace
  (P_s h against P_s mean_l). High means the subspace separates languages.
- `full_acc`: the same in the full hidden space, for contrast.
- `raw_cos`: mean cosine similarity between the held-out means of different languages.
- `shared_cos`: the same after removing the language-specific part (h - P_s h): how alike languages
  look once their language-specific component is gone (higher = more shared).
- `common_cv`: spread across languages of the mean coefficient on the common vector (std / |mean|);
  near 0 means the common vector is language-neutral on unseen sentences too.
- `retrieval_raw` / `retrieval_shared` (parallel data only): how often a sentence's nearest English
  neighbour (cosine) among the held-out English sentences is its translation, in the full space and
  after removing P_s h.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from babeltune.lens.subspace import LanguageSubspace


@dataclass
class LayerDiagnostics:
    layer: int
    specific_acc: float
    full_acc: float
    raw_cos: float
    shared_cos: float
    common_cv: float
    retrieval_raw: float | None = None
    retrieval_shared: float | None = None


def _nearest_centroid_acc(points: dict[str, torch.Tensor], centroids: torch.Tensor, order: Sequence[str]) -> float:
    hits = total = 0
    for i, lang in enumerate(order):
        x = points[lang]  # (N, D)
        if len(x) == 0:
            continue
        dist = torch.cdist(x.double(), centroids.double())  # (N, n)
        hits += int((dist.argmin(dim=1) == i).sum())
        total += len(x)
    return hits / total if total else float("nan")


def _mean_pairwise_cos(means: torch.Tensor) -> float:
    unit = torch.nn.functional.normalize(means.double(), dim=-1)  # (n, D)
    pairs = list(itertools.combinations(range(len(means)), 2))
    return float(sum(float(unit[a] @ unit[b]) for a, b in pairs) / len(pairs)) if pairs else float("nan")


def _retrieval(states: dict[str, torch.Tensor], pids: dict[str, list[str]], central: str) -> float | None:
    """Accuracy of finding each non-central sentence's translation among the central language's sentences."""
    if central not in states:
        return None
    ref_index = {pid: i for i, pid in enumerate(pids[central])}
    ref = torch.nn.functional.normalize(states[central].double(), dim=-1)
    hits = total = 0
    for lang, x in states.items():
        if lang == central:
            continue
        rows = [(i, ref_index[p]) for i, p in enumerate(pids[lang]) if p in ref_index]
        if not rows:
            continue
        sims = torch.nn.functional.normalize(x[[i for i, _ in rows]].double(), dim=-1) @ ref.T  # (N, N_ref)
        hits += int((sims.argmax(dim=1) == torch.tensor([j for _, j in rows])).sum())
        total += len(rows)
    return hits / total if total >= 2 else None


def layer_diagnostics(subspace: LanguageSubspace, heldout: dict[str, torch.Tensor],
                      heldout_pids: dict[str, list[str]] | None = None) -> list[LayerDiagnostics]:
    """Diagnostics for every layer from held-out states per language (L, N, D)."""
    order = [lang for lang in subspace.languages if lang in heldout and heldout[lang].shape[1] > 0]
    if len(order) < 2:
        raise ValueError("diagnostics need held-out sentences in at least 2 languages (raise holdout)")
    rows = []
    for layer in range(subspace.n_layers):
        points = {lang: heldout[lang][layer].double() for lang in order}  # (N, D) each
        means = subspace.means[layer].double()  # (n, D)
        centroids = torch.stack([means[subspace.lang_index(lang)] for lang in order])
        spec_points = {lang: subspace.project_specific(x, layer) for lang, x in points.items()}
        spec_centroids = subspace.project_specific(centroids, layer)
        shared = {lang: x - spec_points[lang] for lang, x in points.items()}
        held_means = torch.stack([x.mean(dim=0) for x in points.values()])
        shared_means = torch.stack([x.mean(dim=0) for x in shared.values()])
        unit = (subspace.common[layer] / subspace.common[layer].norm()).double()
        coefs = torch.stack([(x @ unit).mean() for x in points.values()])
        row = LayerDiagnostics(
            layer=layer,
            specific_acc=_nearest_centroid_acc(spec_points, spec_centroids, order),
            full_acc=_nearest_centroid_acc(points, centroids, order),
            raw_cos=_mean_pairwise_cos(held_means),
            shared_cos=_mean_pairwise_cos(shared_means),
            common_cv=float(coefs.std() / coefs.mean().abs()),
        )
        if heldout_pids is not None:
            row.retrieval_raw = _retrieval(points, heldout_pids, subspace.central)
            row.retrieval_shared = _retrieval(shared, heldout_pids, subspace.central)
        rows.append(row)
    return rows


COLUMNS = ("specific_acc", "full_acc", "raw_cos", "shared_cos", "common_cv", "retrieval_raw", "retrieval_shared")


def format_table(rows: Sequence[LayerDiagnostics]) -> str:
    """A Markdown table, one row per layer (columns without values are left out)."""
    columns = [c for c in COLUMNS if any(getattr(r, c) is not None for r in rows)]
    lines = ["| layer | " + " | ".join(columns) + " |", "|---:|" + "---:|" * len(columns)]
    for r in rows:
        cells = [_fmt(getattr(r, c)) for c in columns]
        lines.append(f"| {r.layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def save_diagnostics(rows: Sequence[LayerDiagnostics], folder: Path, title: str = "") -> list[Path]:
    """diagnostics.json, diagnostics.md and (with matplotlib installed) diagnostics.png."""
    written = [folder / "diagnostics.json", folder / "diagnostics.md"]
    written[0].write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n", encoding="utf-8")
    written[1].write_text((f"# {title}\n\n" if title else "") + format_table(rows) + "\n", encoding="utf-8")
    png = plot_diagnostics(rows, folder / "diagnostics.png", title)
    return [*written, png] if png else written


def plot_diagnostics(rows: Sequence[LayerDiagnostics], path: Path, title: str = "") -> Path | None:
    """Plot the diagnostics over layers; returns None (and says so in the log) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        import logging

        logging.getLogger(__name__).warning("matplotlib is not installed: no plot (pip install 'babeltune[report]')")
        return None
    layers = [r.layer for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(layers, [r.specific_acc for r in rows], marker="o", label="language-specific subspace")
    left.plot(layers, [r.full_acc for r in rows], marker=".", label="full space")
    left.set(title="held-out language identification", xlabel="layer", ylabel="nearest-centroid accuracy",
             ylim=(0, 1.02))
    left.legend()
    right.plot(layers, [r.raw_cos for r in rows], marker=".", label="means, full")
    right.plot(layers, [r.shared_cos for r in rows], marker="o", label="means, language-specific part removed")
    if any(r.retrieval_shared is not None for r in rows):
        right.plot(layers, [r.retrieval_raw for r in rows], ls="--", label="translation retrieval, full")
        right.plot(layers, [r.retrieval_shared for r in rows], ls="--", label="translation retrieval, shared")
    right.set(title="cross-language similarity", xlabel="layer", ylim=(0, 1.02))
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
