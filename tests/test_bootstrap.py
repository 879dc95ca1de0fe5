"""Block bootstrap over order start dates (lem_model.bootstrap) against cases with a known answer."""
import numpy as np
import pytest

from lem_model import bootstrap

DAYS, PER_DAY = 40, 20


def _day_sample(rng, mean=0.0, day_sd=1.0, noise_sd=1.0):
    """Orders of DAYS days; orders of one day share a day effect (so they are not independent)."""
    blocks = np.repeat(np.arange(DAYS), PER_DAY)
    x = mean + rng.normal(0, day_sd, DAYS)[blocks] + rng.normal(0, noise_sd, DAYS * PER_DAY)
    return x, blocks


def test_mean_interval_covers_the_true_mean_at_about_95_percent():
    rng = np.random.default_rng(1)
    sims, covered, covered_iid = 300, 0, 0
    for i in range(sims):
        x, blocks = _day_sample(rng, mean=3.0)
        s = bootstrap.sample_statistics(x, blocks, n_boot=400, seed=i)
        covered += s["mean_lo"] <= 3.0 <= s["mean_hi"]
        iid = bootstrap.sample_statistics(x, np.arange(x.size), n_boot=400, seed=i)  # one block per order
        covered_iid += iid["mean_lo"] <= 3.0 <= iid["mean_hi"]
    # 300 simulations: the binomial sd of a 95 % rate is 1.3 %; percentile intervals on 40 blocks run a bit low
    assert 0.89 <= covered / sims <= 0.98, covered / sims
    # treating overlapping orders as independent badly under-covers (design effect ~ 1 + 19 * 0.5)
    assert covered_iid / sims < 0.7, covered_iid / sims


def test_paired_difference_p_value_is_uniform_under_the_null_and_small_under_an_effect():
    rng = np.random.default_rng(2)
    sims, rejected = 200, 0
    for i in range(sims):
        base, blocks = _day_sample(rng)
        lem = base + rng.normal(0, 0.3, DAYS)[blocks] + rng.normal(0, 0.5, base.size)  # same mean: H0 holds
        rejected += bootstrap.paired_difference(lem, base, blocks, n_boot=400, seed=i)["p_value"] < 0.05
    assert 0.01 <= rejected / sims <= 0.10, rejected / sims
    base, blocks = _day_sample(rng)
    lem = base - 1.0 + rng.normal(0, 0.5, base.size)
    d = bootstrap.paired_difference(lem, base, blocks, n_boot=400, seed=0)
    assert d["p_value"] < 0.01 and d["hi"] < 0 and d["lo"] <= d["mean"] <= d["hi"]
    assert d["mean"] == pytest.approx(float(np.mean(lem - base)))


def test_std_ratio_interval_covers_the_true_ratio():
    rng = np.random.default_rng(3)
    sims, covered = 200, 0
    for i in range(sims):
        blocks = np.repeat(np.arange(DAYS), PER_DAY)
        y = rng.normal(0, 2.0, blocks.size)
        x = rng.normal(0, 1.0, blocks.size)  # true std ratio 0.5
        r = bootstrap.std_ratio(x, y, blocks, n_boot=400, seed=i)
        covered += r["lo"] <= 0.5 <= r["hi"]
        assert r["ratio"] == pytest.approx(x.std(ddof=1) / y.std(ddof=1))
    assert 0.89 <= covered / sims <= 0.99, covered / sims


def test_nan_values_are_excluded_and_counted_and_results_repeat_with_the_seed():
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    blocks = bootstrap.day_blocks(np.array([0, 10, 86_400, 86_500, 2 * 86_400, 3 * 86_400 + 5]))
    assert blocks.tolist() == [0, 0, 1, 1, 2, 3]
    s = bootstrap.sample_statistics(x, blocks, n_boot=200, seed=7)
    assert s["n"] == 5 and s["n_invalid"] == 1 and s["n_blocks"] == 4
    assert s["mean"] == pytest.approx(18.0 / 5) and s["mean_lo"] <= s["mean"] <= s["mean_hi"]
    assert s == bootstrap.sample_statistics(x, blocks, n_boot=200, seed=7)
    with pytest.raises(ValueError, match="same length"):
        bootstrap.paired_difference(x, x[:3], blocks)
    with pytest.raises(ValueError, match="blocks"):
        bootstrap.sample_statistics(x, blocks[:2])
