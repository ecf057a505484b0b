"""Calibrate `babeltune data translate`'s length gate on FLORES-200: how long is a translation, per language?

Reads the FLORES-200 dev files (line n of every file is the same sentence; named by FLORES code, e.g.
`eng_Latn.dev`) for English and each language, measures every sentence as the gate does (characters of
prose: code, links and placeholders masked and left out, stripped: `translate.prose_length`), and prints
per language the quantiles (1%, 5%, 50%, 95%, 99%) of the ratio target / English characters; the band
this calibration gives (median; 1% quantile / margin; 99% quantile x margin, `translate.LENGTH_MARGIN`);
the band the gate uses now (`TranslationGates().band`, so an edit of `LENGTH_BANDS` that drifted from the
data shows); and the share of FLORES's own (human) translations the default gate rejects.

    python benchmarks/calibrate_length_ratio.py                          # study A's 11 languages besides English
    python benchmarks/calibrate_length_ratio.py --flores DIR --languages ja,ko,fr

The FLORES files are read where they are (../shared/data/flores200_dev by default): never copy them into
the repository (CC BY-SA 4.0).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from babeltune.data.translate import LENGTH_MARGIN, TranslationGates, length_bounds, mask, prose_length
from babeltune.languages import STUDY_A_LANGUAGES, get_language, parse_language_list

QUANTILES = (0.01, 0.05, 0.50, 0.95, 0.99)
DEFAULT_FLORES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "flores200_dev"


def read_flores(folder: Path, lang: str) -> list[str]:
    """The sentences of `lang`'s FLORES dev file, one per line."""
    flores = get_language(lang).flores
    path = folder / f"{flores}.dev"
    if flores is None or not path.is_file():
        raise SystemExit(f"{path}: no FLORES file for {lang} ({get_language(lang).name})")
    return path.read_text(encoding="utf-8").splitlines()


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), 0 <= q <= 1."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def calibrate(english: list[str], target: list[str], lang: str, gates: TranslationGates
              ) -> tuple[list[float], tuple[float, float, float], float]:
    """(quantiles of the ratio, the band they give, share of pairs the gate `gates` rejects)."""
    if len(english) != len(target):
        raise SystemExit(f"{lang}: {len(target)} lines against English's {len(english)}: not parallel")
    pairs = [(prose_length(mask(en)[0]), prose_length(mask(tgt)[0])) for en, tgt in zip(english, target, strict=True)]
    ratios = [tgt / en for en, tgt in pairs if en > 0]
    qs = [quantile(ratios, q) for q in QUANTILES]
    low, high = math.floor(qs[0] / LENGTH_MARGIN * 100) / 100, math.ceil(qs[4] * LENGTH_MARGIN * 100) / 100
    band = (round(qs[2], 3), low, high)
    outside = 0
    for en, tgt in pairs:
        shortest, longest = length_bounds(en, "en", lang, gates)
        outside += not shortest <= tgt <= longest
    return qs, band, outside / len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flores", type=Path, default=DEFAULT_FLORES, help="folder of FLORES-200 dev files")
    parser.add_argument("--languages", default=",".join(c for c in STUDY_A_LANGUAGES if c != "en"),
                        help="target languages (default: study A's besides English)")
    args = parser.parse_args()
    gates = TranslationGates()
    english = read_flores(args.flores, "en")
    print(f"FLORES-200 dev, {len(english)} sentences per language ({args.flores.resolve()}); ratio = target / English "
          f"characters of prose; margin {LENGTH_MARGIN}")
    print("| lang | q01 | q05 | q50 | q95 | q99 | calibrated band (median, low, high) | gate's band now | "
          "FLORES pairs the gate rejects |")
    print("|---|---|---|---|---|---|---|---|---|")
    spreads: list[tuple[float, float]] = []
    for lang in parse_language_list(args.languages):
        qs, band, rejected = calibrate(english, read_flores(args.flores, lang), lang, gates)
        now = gates.band(lang)
        spreads.append((band[1] / band[0], band[2] / band[0]))
        print(f"| {lang} | " + " | ".join(f"{q:.3f}" for q in qs) + f" | {band[0]:.3f}, {band[1]:.2f}, {band[2]:.2f} | "
              f"{now[0]:.3f}, {now[1]:.2f}, {now[2]:.2f}{'' if now == band else ' (differs)'} | {rejected:.1%} |")
    lows, highs = zip(*spreads, strict=True)
    print(f"bands relative to their medians: low {min(lows):.2f}-{max(lows):.2f}, "
          f"high {min(highs):.2f}-{max(highs):.2f} (the fallback for uncalibrated languages: min_ratio "
          f"{gates.min_ratio}, max_ratio {gates.max_ratio})")


if __name__ == "__main__":
    main()
