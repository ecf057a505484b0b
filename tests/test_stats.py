"""babeltune.stats: Wilson intervals, (cluster) bootstrap means, paired differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from babeltune import stats


def test_wilson_matches_the_textbook_value() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, example: 81 of 263 -> 0.2553 to 0.3662 (Wilson, 95%).
    low, high = stats.wilson(81, 263)
    assert low == pytest.approx(0.2553, abs=5e-5) and high == pytest.approx(0.3662, abs=5e-5)
    # Hand-computed: p = 0, n = 10, z = 1.95996: upper = z^2 / (n + z^2) = 3.8415 / 13.8415 = 0.27753.
    assert stats.wilson(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert stats.wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert stats.wilson(5, 5)[1] == 1.0


def test_a_rate_from_a_handful_of_items_never_has_a_zero_width_interval() -> None:
    for outcomes in ([1, 1, 1, 1], [0, 0], [1]):
        est = stats.rate(outcomes)
        assert est.high - est.low > 0.2, est
    est = stats.rate([True] * 4)
    assert est.value == 1.0 and est.high == 1.0 and est.low == pytest.approx(0.5101, abs=1e-4)
    assert stats.rate([]).n == 0 and math.isnan(stats.rate([]).value)
    with pytest.raises(ValueError, match="yes/no"):
        stats.rate([0.5])


def test_bootstrap_mean_is_seeded_and_covers_the_mean() -> None:
    values = np.random.default_rng(0).random(200)
    a = stats.bootstrap_mean(values, seed=3)
    assert a == stats.bootstrap_mean(values, seed=3)
    assert a != stats.bootstrap_mean(values, seed=4)
    assert a.low < values.mean() < a.high and a.n == 200
    half = stats.bootstrap_mean([0.0, 1.0] * 50, n_boot=2000, seed=1)
    assert 0.38 < half.low < 0.5 < half.high < 0.62
    assert math.isnan(stats.bootstrap_mean([]).value)
    off = stats.bootstrap_mean([1.0, 2.0], n_boot=0)
    assert off.value == 1.5 and math.isnan(off.low)


def test_cluster_bootstrap_is_wider_than_the_naive_one_on_clustered_data() -> None:
    # 20 prompts x 12 languages; the value is the prompt's (all languages alike): 20 independent
    # observations, not 240. The naive bootstrap pretends 240 and is far too narrow.
    rng = np.random.default_rng(0)
    prompt_value = rng.random(20)
    values = np.repeat(prompt_value, 12)
    pids = [f"p{i}" for i in range(20) for _ in range(12)]
    naive = stats.bootstrap_mean(values, seed=1)
    clustered = stats.bootstrap_mean(values, pids, seed=1)
    assert naive.value == pytest.approx(clustered.value)
    width_naive, width_clustered = naive.high - naive.low, clustered.high - clustered.low
    assert width_clustered > 2.5 * width_naive  # sqrt(12) = 3.46 in expectation
    per_prompt = stats.bootstrap_mean(prompt_value, seed=1)
    assert width_clustered == pytest.approx(per_prompt.high - per_prompt.low, rel=0.25)


def test_paired_difference_excludes_zero_on_a_clear_case_and_includes_it_on_noise() -> None:
    rng = np.random.default_rng(0)
    base = {f"q{i}": float(rng.random()) for i in range(40)}
    better = {k: v + 0.1 + float(rng.normal(0, 0.02)) for k, v in base.items()}
    clear = stats.paired_difference(better, base, seed=0)
    assert clear.value == pytest.approx(0.1, abs=0.01) and clear.excludes(0.0) and clear.n == 40
    noise = {k: v + float(rng.normal(0, 0.1)) for k, v in base.items()}
    diff = stats.paired_difference(noise, base, seed=0)
    assert diff.low < 0 < diff.high and not diff.excludes(0.0)
    # Only shared items count; NaN is not an item.
    partial = stats.paired_difference({"a": 1.0, "b": 0.0, "c": math.nan}, {"a": 0.0, "c": 1.0, "d": 1.0})
    assert partial.n == 1 and partial.value == 1.0
    assert stats.paired_difference({"a": 1.0}, {"b": 1.0}).n == 0


def test_paired_difference_is_narrower_than_unpaired_when_prompts_differ_in_difficulty() -> None:
    rng = np.random.default_rng(1)
    difficulty = rng.normal(0, 1, 60)
    a = {f"q{i}": float(d + 0.3 + rng.normal(0, 0.1)) for i, d in enumerate(difficulty)}
    b = {f"q{i}": float(d + rng.normal(0, 0.1)) for i, d in enumerate(difficulty)}
    paired = stats.paired_difference(a, b, seed=0)
    assert paired.excludes(0.0)
    mean_a = stats.bootstrap_mean(list(a.values()), seed=0)
    assert paired.high - paired.low < (mean_a.high - mean_a.low) / 3


def test_paired_difference_clusters_by_prompt() -> None:
    rng = np.random.default_rng(2)
    effect = rng.normal(0, 1, 10)
    a = {(p, lang): float(effect[p]) for p in range(10) for lang in range(12)}
    b = dict.fromkeys(a, 0.0)
    naive = stats.paired_difference(a, b, seed=0)
    clustered = stats.paired_difference(a, b, {k: k[0] for k in a}, seed=0)
    assert clustered.high - clustered.low > 2.5 * (naive.high - naive.low)


def test_derive_seed_and_harmonic_mean() -> None:
    assert stats.derive_seed(0, "en", "x") == stats.derive_seed(0, "en", "x") != stats.derive_seed(0, "en", "y")
    assert float(stats.harmonic_mean(0.5, 1.0)) == pytest.approx(2 / 3)
    assert float(stats.harmonic_mean(0.0, 0.0)) == 0.0


def test_paired_rate_differences_never_collapse_when_every_pair_agrees() -> None:
    # 4 prompts right in both conditions: the bootstrap of differences is [0, 0]; Newcombe's interval is
    # +-(1 - Wilson low of 4/4) = +-(1 - 0.5101) by hand (phi = 0: a margin is empty).
    same = stats.paired_difference({i: 1.0 for i in range(4)}, {i: 1.0 for i in range(4)})
    assert same.value == 0.0 and (same.low, same.high) == pytest.approx((-0.4899, 0.4899), abs=1e-4)
    assert stats.newcombe_paired(4, 0, 0, 0) == pytest.approx((0.0, -0.4899, 0.4899), abs=1e-4)
    # 30 of 30 pairs go from wrong to right: a clear improvement, and the interval says so.
    better = stats.paired_difference({i: 1.0 for i in range(30)}, {i: 0.0 for i in range(30)})
    assert better.value == 1.0 and better.excludes(0.0) and better.high == 1.0
    # Not yes/no: the bootstrap alone.
    plain = stats.paired_difference({i: 0.5 for i in range(4)}, {i: 0.5 for i in range(4)})
    assert plain.low == plain.high == 0.0


def test_one_cluster_gives_no_bootstrap_interval() -> None:
    one = stats.bootstrap_mean([0.0, 100.0], ["p1", "p1"])  # en and es of one prompt: one cluster
    assert one.value == 50.0 and math.isnan(one.low) and one.n == 2
    # A difference on one prompt in two languages (the shrunken demo's case) is no finding: with the
    # scores' range it gets the Wilson interval of +25 on [-100, 100], a share of 0.625 of 2 items.
    diff = stats.paired_difference({"en": 100.0, "es": 50.0}, {"en": 50.0, "es": 50.0}, {"en": "p", "es": "p"},
                                   bounds=(0.0, 100.0))
    low, high = stats.wilson(0.625 * 2, 2)
    assert diff.value == 25.0 and (diff.low, diff.high) == pytest.approx((-100 + 200 * low, -100 + 200 * high))
    assert not diff.excludes(0.0)


def test_bounded_means_never_get_a_zero_width_interval() -> None:
    two_ties = stats.bootstrap_mean([50.0, 50.0], bounds=(0.0, 100.0))
    low, high = stats.wilson(1, 2)  # 50 is half of the range: a share of 1 in 2 by hand
    assert two_ties.value == 50.0 and (two_ties.low, two_ties.high) == pytest.approx((100 * low, 100 * high))
    assert stats.bootstrap_mean([50.0, 50.0]).low == stats.bootstrap_mean([50.0, 50.0]).high == 50.0  # unbounded
    # Varied scores: the bootstrap says something and is kept as it is.
    rng = np.random.default_rng(0)
    scores = [float(v) for v in rng.choice([1.0, 2.0, 3.0], 400)]
    assert stats.bootstrap_mean(scores, seed=0) == stats.bootstrap_mean(scores, seed=0, bounds=(1.0, 3.0))


def test_intervals_do_not_depend_on_the_order_items_came_in() -> None:
    """Backends finish prompts in different orders (vLLM vs the local engine): the same items in another
    order must give the same interval, for cluster means and paired differences."""
    import random

    values = [float(i % 3 == 0) + 0.1 * i for i in range(30)]
    pids = [f"p{i % 10}" for i in range(30)]
    order = list(range(30))
    random.Random(1).shuffle(order)
    first = stats.bootstrap_mean(values, pids, seed=3)
    again = stats.bootstrap_mean([values[i] for i in order], [pids[i] for i in order], seed=3)
    assert (first.value, first.low, first.high) == pytest.approx((again.value, again.low, again.high), abs=1e-12)
    a = {f"x{i}": values[i] for i in range(30)}
    b = {f"x{i}": values[(i * 7) % 30] for i in range(30)}
    shuffled_a = {f"x{i}": a[f"x{i}"] for i in order}
    d1 = stats.paired_difference(a, b, seed=5)
    d2 = stats.paired_difference(shuffled_a, b, seed=5)
    assert (d1.low, d1.high) == pytest.approx((d2.low, d2.high), abs=1e-12)


def test_rounding_noise_is_no_spread() -> None:
    """Differences that cancel only up to rounding (1e-17) are degenerate: a bounded score then gets its
    Wilson fallback, not a zero-width bootstrap interval that depends on the order of the sums."""
    noise = [1e-17, -1e-17, 0.0, 2e-17, -2e-17, 0.0]
    est = stats.bootstrap_mean(noise, [f"p{i}" for i in range(6)], bounds=(-1.0, 1.0), seed=0)
    exact = stats.bootstrap_mean([0.0] * 6, [f"p{i}" for i in range(6)], bounds=(-1.0, 1.0), seed=0)
    assert est.high - est.low > 0.1
    assert (est.low, est.high) == pytest.approx((exact.low, exact.high))
