"""The metrics on sets whose answer is known in closed form or by construction."""

import numpy as np
import pytest
import scipy.linalg

from evaluation import metrics as M


def gaussian(n: int, mean, cov, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).multivariate_normal(mean, cov, size=n)


def random_cov(dim: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def test_fid_of_identical_sets_is_zero():
    x = gaussian(500, np.zeros(8), random_cov(8, 0), seed=1)
    assert M.fid(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fid_from_stats_matches_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 0.0]), np.array([1.0, 2.0])
    cov1, cov2 = np.diag([1.0, 4.0]), np.diag([4.0, 9.0])
    # |Δμ|² + Σ (σ1 − σ2)² = 5 + 1 + 1
    assert M.frechet_distance_from_stats(mu1, cov1, mu2, cov2) == pytest.approx(7.0)


def test_fid_from_stats_matches_scipy_sqrtm_for_non_commuting_covariances():
    cov1, cov2 = random_cov(6, 1), random_cov(6, 2)
    mu1, mu2 = np.arange(6.0), np.zeros(6)
    expected = mu1 @ mu1 + np.trace(cov1 + cov2 - 2 * np.real(scipy.linalg.sqrtm(cov1 @ cov2)))
    assert M.frechet_distance_from_stats(mu1, cov1, mu2, cov2) == pytest.approx(expected, rel=1e-8)


def test_fid_of_samples_approaches_the_population_value():
    cov = random_cov(4, 3)
    shift = np.array([0.5, -0.5, 1.0, 0.0])
    x = gaussian(20000, np.zeros(4), cov, seed=4)
    y = gaussian(20000, shift, 2.25 * cov, seed=5)
    # same shape, scaled covariance: tr(C + s²C − 2sC) = (1 − s)² tr(C) with s = 1.5
    expected = shift @ shift + 0.25 * np.trace(cov)
    assert M.fid(x, y) == pytest.approx(expected, rel=0.05)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    cov = random_cov(16, 6)
    x, y = gaussian(1000, np.zeros(16), cov, 7), gaussian(1000, np.zeros(16), cov, 8)
    same_mean, same_std = M.kid(x, y, subsets=20, subset_size=500)
    assert abs(same_mean) < max(3 * same_std, 1e-3)
    shifted_mean, shifted_std = M.kid(x, y + 0.5, subsets=20, subset_size=500)
    assert shifted_mean > 10 * max(abs(same_mean), shifted_std)


def test_kid_is_unbiased_enough_to_go_negative_on_identical_distributions():
    cov = np.eye(4)
    means = [
        M.kid(gaussian(200, np.zeros(4), cov, s), gaussian(200, np.zeros(4), cov, 100 + s), 5, 200)[0]
        for s in range(10)
    ]
    assert min(means) < 0 < max(means)  # a biased estimator would stay positive


def test_gaussian_mmd_near_zero_for_one_distribution_positive_for_two():
    x, y = gaussian(800, np.zeros(8), np.eye(8), 9), gaussian(800, np.zeros(8), np.eye(8), 10)
    bandwidth = M.median_bandwidth(x)
    same = M.gaussian_mmd2(x, y, bandwidth)
    assert abs(same) < 2e-3
    assert M.gaussian_mmd2(x, y + 1.0, bandwidth) > 20 * abs(same)
    with pytest.raises(ValueError, match="bandwidth"):
        M.gaussian_mmd2(x, y, 0.0)


def test_one_nn_accuracy_half_for_one_distribution_one_for_disjoint_zero_for_copies():
    x, y = gaussian(1000, np.zeros(8), np.eye(8), 11), gaussian(1000, np.zeros(8), np.eye(8), 12)
    assert M.one_nn_accuracy(x, y)["accuracy"] == pytest.approx(0.5, abs=0.05)
    disjoint = M.one_nn_accuracy(x, y + 100.0)
    assert disjoint == {"accuracy": 1.0, "real": 1.0, "fake": 1.0}
    assert M.one_nn_accuracy(x, x.copy())["accuracy"] == 0.0  # every sample's nearest is its copy


def test_one_nn_uses_equal_sized_samples():
    x, y = gaussian(300, np.zeros(3), np.eye(3), 13), gaussian(50, np.zeros(3) + 100, np.eye(3), 14)
    assert M.one_nn_accuracy(x, y)["accuracy"] == 1.0


def test_precision_recall_same_distribution_high_disjoint_zero():
    x, y = gaussian(1000, np.zeros(4), np.eye(4), 15), gaussian(1000, np.zeros(4), np.eye(4), 16)
    precision, recall = M.precision_recall(x, y, k=3)
    assert precision > 0.8 and recall > 0.8
    assert M.precision_recall(x, y + 100.0, k=3) == (0.0, 0.0)


def test_precision_recall_separate_quality_from_coverage():
    real = gaussian(1000, np.zeros(4), np.eye(4), 17)
    narrow = gaussian(1000, np.zeros(4), 0.05 * np.eye(4), 18)  # good samples, poor coverage
    precision, recall = M.precision_recall(real, narrow, k=3)
    assert precision > 0.95
    assert recall < 0.5


def test_density_coverage_by_hand():
    real, fake = np.array([[0.0], [1.0], [3.0], [6.0]]), np.array([[0.5], [2.5], [10.0]])
    # k = 1: radii 1, 1, 2, 3. 0.5 lies in the balls of 0 and 1, 2.5 in that of 3, 10 in none: 3 / (1 · 3);
    # the ball of 6 holds no fake sample
    assert M.density_coverage(real, fake, k=1) == (pytest.approx(1.0), 0.75)
    # k = 2: radii 3, 2, 3, 5. 0.5 lies in 3 balls, 2.5 in all 4, 10 in that of 6: 8 / (2 · 3)
    assert M.density_coverage(real, fake, k=2) == (pytest.approx(4 / 3), 1.0)


def test_density_coverage_of_identical_independent_and_distant_sets():
    x = gaussian(2000, np.zeros(4), np.eye(4), 19)
    # a copy lies in its own ball and in the balls of the k samples it is a neighbour of: (k + 1) / k
    assert M.density_coverage(x, x.copy(), k=5) == (pytest.approx(1.2), 1.0)
    density, coverage = M.density_coverage(x, gaussian(2000, np.zeros(4), np.eye(4), 20), k=5)
    assert density == pytest.approx(1.0, abs=0.1)
    assert coverage > 0.9  # Naeem et al.: 1 − 2^−k for equal-sized sets of one distribution, ~0.97
    assert M.density_coverage(x, x + 100.0, k=5) == (0.0, 0.0)


def test_density_coverage_separate_quality_from_coverage_and_ignore_outliers():
    real = gaussian(1000, np.zeros(4), np.eye(4), 21)
    narrow = gaussian(1000, np.zeros(4), 0.05 * np.eye(4), 22)  # dense where real is dense, covers little
    density, coverage = M.density_coverage(real, narrow, k=5)
    assert density > 1.0 and coverage < 0.3  # measured: 1.12 and 0.15
    fake = gaussian(1000, np.zeros(4), np.eye(4), 23)
    clean = M.density_coverage(real, fake, k=5)
    fake[:100] += 100.0  # 10% far outliers: density drops by about a tenth, nothing is covered anew
    dirty = M.density_coverage(real, fake, k=5)
    assert dirty[0] == pytest.approx(0.9 * clean[0], rel=0.05)
    assert dirty[1] <= clean[1]


def test_kth_neighbour_distances_skip_self_and_check_k():
    x = np.array([[0.0], [1.0], [3.0], [6.0]])
    assert M.kth_neighbour_distances(x, 1).tolist() == [1.0, 1.0, 2.0, 3.0]
    assert M.kth_neighbour_distances(x, 2).tolist() == [3.0, 2.0, 3.0, 5.0]
    with pytest.raises(ValueError, match="k must be"):
        M.kth_neighbour_distances(x, 4)


def test_inception_score_bounds():
    confident = np.eye(10)[np.arange(1000) % 10] * 50.0
    assert M.inception_score(confident, splits=1)[0] == pytest.approx(10.0, rel=1e-6)
    one_class = np.eye(10)[np.zeros(1000, dtype=int)] * 50.0
    assert M.inception_score(one_class)[0] == pytest.approx(1.0, abs=1e-6)
    assert M.inception_score(np.zeros((1000, 10)))[0] == pytest.approx(1.0)


def test_inception_score_does_not_depend_on_order():
    logits = np.eye(10)[np.sort(np.arange(1000) % 10)] * 50.0  # sorted by label, like the data files
    # unshuffled splits of 100 would each hold one label (score 1); shuffled ones hold about 10 labels each
    assert M.inception_score(logits, splits=10)[0] > 9.0


def test_label_accuracy_overall_and_per_label():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 0, 0])
    overall, per_label = M.label_accuracy(predicted, labels, 3)
    assert overall == pytest.approx(0.5)
    assert per_label == [0.5, 1.0, 0.0]


def test_mean_pairwise_distance_falls_to_zero_for_a_collapsed_set():
    assert M.mean_pairwise_distance(np.ones((50, 8))) == 0.0
    assert M.mean_pairwise_distance(np.array([[0.0, 0.0], [3.0, 4.0]])) == 5.0


def test_features_must_be_two_dimensional():
    with pytest.raises(ValueError, match="features must be"):
        M.fid(np.zeros(10), np.zeros(10))
