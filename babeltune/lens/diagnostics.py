"""Which layers carry language identity: a table and a plot over layers, from held-out sentences.

Per layer, on sentences that were not used to compute the means:

- `specific_acc`: nearest-centroid language identification inside the language-specific subspace
  (P_s h against P_s mean_l). High means the subspace separates languages. (With r = n - 1 every mean
  is c + a point of M_s and c is orthogonal to M_s, so this equals nearest-centroid accuracy in the full
  space: the subspace keeps all the language identity the means carry.)
- `specific_share`: mean |P_s h|^2 / |h|^2, the share of a state's energy in the subspace.
- `common_cv`: spread across languages of the mean coefficient on the common vector (std / |mean|);
  near 0 means the common vector is language-neutral on unseen sentences too.
- with parallel data (shared pids), against the central language's translation of each sentence,
  on states centred by their mean over all held-out sentences (the raw states share a large offset that
  makes every cosine near 1), in the full space (`raw`) and after removing P_s h (`shared`):
  `pair_cos_*`, the mean cosine between a sentence and its translation, and `retrieval_*`, how often
  the translation is the nearest (cosine) of the central language's held-out sentences.
"""

from __future__ import annotations

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
    specific_share: float
    common_cv: float
    pair_cos_raw: float | None = None
    pair_cos_shared: float | None = None
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


def _pairs(states: dict[str, torch.Tensor], pids: dict[str, list[str]], central: str
           ) -> tuple[float, float] | None:
    """(mean cosine to the translation, retrieval accuracy) of every non-central sentence against the
    central language's held-out sentences; None without at least 2 translation pairs."""
    if central not in states:
        return None
    ref_index = {pid: i for i, pid in enumerate(pids[central])}
    ref = torch.nn.functional.normalize(states[central].double(), dim=-1)  # (N_ref, D)
    hits = total = 0
    cos = 0.0
    for lang, x in states.items():
        if lang == central:
            continue
        rows = [(i, ref_index[p]) for i, p in enumerate(pids[lang]) if p in ref_index]
        if not rows:
            continue
        sims = torch.nn.functional.normalize(x[[i for i, _ in rows]].double(), dim=-1) @ ref.T  # (N, N_ref)
        target = torch.tensor([j for _, j in rows])
        hits += int((sims.argmax(dim=1) == target).sum())
        cos += float(sims[torch.arange(len(rows)), target].sum())
        total += len(rows)
    return (cos / total, hits / total) if total >= 2 else None


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
        share = torch.cat([(spec_points[lang] ** 2).sum(-1) / (x ** 2).sum(-1) for lang, x in points.items()])
        unit = (subspace.common[layer] / subspace.common[layer].norm()).double()
        coefs = torch.stack([(x @ unit).mean() for x in points.values()])
        row = LayerDiagnostics(
            layer=layer,
            specific_acc=_nearest_centroid_acc(spec_points, spec_centroids, order),
            specific_share=float(share.mean()),
            common_cv=float(coefs.std() / coefs.mean().abs()),
        )
        if heldout_pids is not None:
            offset = torch.cat(list(points.values())).mean(dim=0)
            raw = {lang: x - offset for lang, x in points.items()}
            shared = {lang: x - spec_points[lang] for lang, x in points.items()}
            shared_offset = torch.cat(list(shared.values())).mean(dim=0)
            shared = {lang: x - shared_offset for lang, x in shared.items()}
            for kind, states in (("raw", raw), ("shared", shared)):
                found = _pairs(states, heldout_pids, subspace.central)
                if found is not None:
                    setattr(row, f"pair_cos_{kind}", found[0])
                    setattr(row, f"retrieval_{kind}", found[1])
        rows.append(row)
    return rows


COLUMNS = ("specific_acc", "specific_share", "common_cv", "pair_cos_raw", "pair_cos_shared", "retrieval_raw",
           "retrieval_shared")


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
    left.plot(layers, [r.specific_share for r in rows], marker=".", label="share of |h|^2 in the subspace")
    left.set(title="held-out language identification", xlabel="layer", ylabel="nearest-centroid accuracy",
             ylim=(0, 1.02))
    left.legend()
    if any(r.retrieval_shared is not None for r in rows):
        right.plot(layers, [r.retrieval_raw for r in rows], marker=".", label="translation retrieval, full")
        right.plot(layers, [r.retrieval_shared for r in rows], marker="o", label="translation retrieval, P_s h removed")
        right.plot(layers, [r.pair_cos_raw for r in rows], ls="--", label="translation cosine, full")
        right.plot(layers, [r.pair_cos_shared for r in rows], ls="--", label="translation cosine, P_s h removed")
    right.set(title="shared meaning across languages (centred states)", xlabel="layer", ylim=(-0.05, 1.02))
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
