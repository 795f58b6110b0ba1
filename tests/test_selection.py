"""Mask selectors against straightforward reference implementations."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wanda_engine.methods.scoring import InputStats, magnitude_score, wanda_score
from wanda_engine.methods.selection import prune_adaptive_alpha, select


def select_mask(score: torch.Tensor, sparsity: float, group: str, nm=None) -> torch.Tensor:
    return select(score, sparsity, group, nm).mask


def prune_lowest_per_row(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    return select_mask(score, sparsity, "row")


def prune_lowest_in_matrix(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    return select_mask(score, sparsity, "matrix")


def prune_n_of_m(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    return select_mask(score, 0.0, "nm", (n, m))


def reference_per_row(score: np.ndarray, sparsity: float) -> np.ndarray:
    """The Wanda reference: stable sort each row, prune the first int(in·s)."""
    mask = np.zeros(score.shape, dtype=bool)
    k = int(score.shape[1] * sparsity)
    for r in range(score.shape[0]):
        mask[r, np.argsort(score[r], kind="stable")[:k]] = True
    return mask


def reference_nm(score: np.ndarray, n: int, m: int) -> np.ndarray:
    mask = np.zeros(score.shape, dtype=bool)
    for r in range(score.shape[0]):
        for g in range(0, score.shape[1], m):
            mask[r, g + np.argsort(score[r, g : g + m], kind="stable")[:n]] = True
    return mask


@pytest.mark.parametrize("shape", [(8, 16), (33, 70), (64, 128)])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.73, 0.9])
def test_per_row_matches_reference(shape, sparsity):
    score = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    mask = prune_lowest_per_row(score, sparsity)
    np.testing.assert_array_equal(mask.numpy(), reference_per_row(score.numpy(), sparsity))
    assert (mask.sum(dim=1) == int(shape[1] * sparsity)).all()


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.61])
def test_per_matrix_prunes_exactly_the_lowest(sparsity):
    score = torch.rand(37, 53, generator=torch.Generator().manual_seed(2))
    mask = prune_lowest_in_matrix(score, sparsity)
    k = int(score.numel() * sparsity)
    assert int(mask.sum()) == k
    expected = np.zeros(score.numel(), dtype=bool)
    expected[np.argsort(score.numpy().ravel(), kind="stable")[:k]] = True
    np.testing.assert_array_equal(mask.numpy().ravel(), expected)


@pytest.mark.parametrize("n,m", [(1, 4), (2, 4), (3, 4)])
def test_n_of_m_every_ordering_of_a_group(n, m):
    """Exhaustive: every ordering of M distinct scores in a group prunes exactly the N smallest."""
    perms = torch.tensor(list(itertools.permutations(range(m))), dtype=torch.float32)  # [M!, M]
    mask = prune_n_of_m(perms, n, m)
    assert (mask.sum(dim=1) == n).all()
    assert torch.equal(mask, perms < n)


def test_n_of_m_every_ordering_4_of_8():
    perms = torch.tensor(list(itertools.permutations(range(8))), dtype=torch.float32)  # [40320, 8]
    mask = prune_n_of_m(perms, 4, 8)
    assert torch.equal(mask, perms < 4)


@pytest.mark.parametrize("n,m,width", [(2, 4, 64), (4, 8, 64), (16, 32, 96), (3, 7, 70)])
def test_n_of_m_matches_reference_on_wide_rows(n, m, width):
    score = torch.rand(19, width, generator=torch.Generator().manual_seed(3))
    mask = prune_n_of_m(score, n, m)
    np.testing.assert_array_equal(mask.numpy(), reference_nm(score.numpy(), n, m))
    assert (mask.view(19, width // m, m).sum(dim=2) == n).all()


def test_n_of_m_refuses_indivisible_width():
    with pytest.raises(ValueError, match="not a multiple"):
        prune_n_of_m(torch.rand(4, 10), 2, 4)


def reference_variant(W_metric: torch.Tensor, sparsity_ratio: float) -> tuple[torch.Tensor, float]:
    """The Wanda reference (lib/prune.py, `prune_wanda` with `use_variant`), transcribed for one matrix."""
    def return_given_alpha(alpha, sort_res, W_metric, tmp_metric, sum_before):
        thres_cumsum = sum_before * alpha
        sort_mask = tmp_metric <= thres_cumsum.reshape((-1, 1))
        thres = torch.gather(sort_res[0], dim=1, index=sort_mask.sum(dim=1, keepdims=True) - 1)
        W_mask = W_metric <= thres
        cur_sparsity = (W_mask == True).sum() / W_mask.numel()  # noqa: E712
        return W_mask, cur_sparsity

    sort_res = torch.sort(W_metric, dim=-1, stable=True)
    tmp_metric = torch.cumsum(sort_res[0], dim=1)
    sum_before = W_metric.sum(dim=1)
    alpha = 0.4
    alpha_hist = [0., 0.8]
    W_mask, cur_sparsity = return_given_alpha(alpha, sort_res, W_metric, tmp_metric, sum_before)
    while (torch.abs(cur_sparsity - sparsity_ratio) > 0.001) and (alpha_hist[1] - alpha_hist[0] >= 0.001):
        if cur_sparsity > sparsity_ratio:
            alpha_new = (alpha + alpha_hist[0]) / 2.0
            alpha_hist[1] = alpha
        else:
            alpha_new = (alpha + alpha_hist[1]) / 2.0
            alpha_hist[0] = alpha
        alpha = alpha_new
        W_mask, cur_sparsity = return_given_alpha(alpha, sort_res, W_metric, tmp_metric, sum_before)
    return W_mask, alpha


def wanda_like_scores(shape, seed: int) -> torch.Tensor:
    """Heavy-tailed scores like |W|·‖X‖ with outlier channels."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).abs() * torch.randn(shape[1], generator=g).exp().view(1, -1)


@pytest.mark.parametrize("shape", [(64, 256), (128, 96), (300, 200)])
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_variant_lands_within_tolerance(shape, sparsity):
    score = wanda_like_scores(shape, seed=4)
    mask, alpha = prune_adaptive_alpha(score, sparsity)
    assert abs(mask.float().mean().item() - sparsity) <= 0.001
    assert 0 < alpha < 1
    # the defining rule, row by row: prune the lowest scores whose cumulative sum stays <= alpha·row sum,
    # in the scores' own precision (the reference's), ties with the last of them included
    ordered = torch.sort(score, dim=1, stable=True).values
    cum, totals = torch.cumsum(ordered, dim=1), score.sum(dim=1)
    for r in range(0, shape[0], max(1, shape[0] // 7)):
        count = int((cum[r] <= totals[r] * alpha).sum())
        np.testing.assert_array_equal(mask[r].numpy(), (score[r] <= ordered[r, count - 1]).numpy())


@pytest.mark.parametrize("shape", [(64, 256), (128, 96), (300, 200), (7, 128), (1, 512)])
@pytest.mark.parametrize("sparsity", [0.1, 0.3, 0.5, 0.6, 0.7, 0.9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_variant_is_the_reference_search(shape, sparsity, seed):
    """The same scores give the reference's mask and alpha exactly: its bracket, steps, stop rule and fp32 sums."""
    score = wanda_like_scores(shape, seed) if seed else torch.rand(shape, generator=torch.Generator().manual_seed(9))
    mask, alpha = prune_adaptive_alpha(score, sparsity)
    expected_mask, expected_alpha = reference_variant(score, sparsity)
    assert alpha == expected_alpha
    assert torch.equal(mask, expected_mask)


def test_variant_stops_off_target_when_the_bracket_is_exhausted():
    """As the reference: a matrix too small to land within 0.001 ends the search at the bracket's width."""
    score = wanda_like_scores((4, 8), seed=3)
    mask, alpha = prune_adaptive_alpha(score, 0.55)
    expected_mask, expected_alpha = reference_variant(score, 0.55)
    assert abs(mask.float().mean().item() - 0.55) > 0.001
    assert alpha == expected_alpha and torch.equal(mask, expected_mask)


def test_variant_prunes_ties_with_the_threshold_as_the_reference_does():
    score = torch.tensor([[1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0]] * 3)
    mask, alpha = prune_adaptive_alpha(score, 0.5)
    expected_mask, expected_alpha = reference_variant(score, 0.5)
    assert alpha == expected_alpha == 0.2 and torch.equal(mask, expected_mask)
    # at alpha 0.2 the budget 3.6 holds three of the 1.0s: the fourth, tied with them, goes too
    assert mask[:, :4].all() and not mask[:, 4:].any()


def test_variant_prunes_nothing_in_a_row_whose_lowest_score_exceeds_the_budget():
    """Where the reference would gather at index -1 and fail: one dominant score, a tiny target."""
    score = torch.tensor([[100.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    mask, alpha = prune_adaptive_alpha(score, 0.001)
    assert alpha < 0.01 and not mask.any()


def test_wanda_equals_magnitude_when_activation_norms_are_equal():
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(5))
    stats = InputStats(64, torch.device("cpu"))
    stats.add(torch.ones(3, 10, 64) * 0.7)
    for group in ("row", "matrix"):
        assert torch.equal(select_mask(wanda_score(w, stats), 0.5, group), select_mask(magnitude_score(w, None), 0.5, group))


def test_wanda_differs_from_magnitude_with_an_outlier_channel():
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(6))
    x = torch.randn(4, 16, 64, generator=torch.Generator().manual_seed(7))
    x[..., 5] *= 100  # an outlier feature
    stats = InputStats(64, torch.device("cpu"))
    stats.add(x)
    wanda = select_mask(wanda_score(w, stats), 0.5, "row")
    magnitude = select_mask(magnitude_score(w, None), 0.5, "row")
    assert not wanda[:, 5].any(), "Wanda keeps every weight of the outlier channel"
    assert magnitude[:, 5].any()


def test_input_stats_match_the_reference_running_mean():
    """scaler_row as the reference accumulates it: a running mean over samples of ‖x_j‖² per sample."""
    xs = torch.randn(6, 12, 8, generator=torch.Generator().manual_seed(8))
    stats = InputStats(8, torch.device("cpu"), with_gram=True)
    for chunk in xs.split(4):
        stats.add(chunk)
    scaler_row, n = torch.zeros(8), 0
    for x in xs:  # one sample at a time, as the reference does
        scaler_row *= n / (n + 1)
        n += 1
        scaler_row += torch.norm(x, p=2, dim=0) ** 2 / n
    torch.testing.assert_close(stats.scaler_row, scaler_row)
    flat = xs.reshape(-1, 8)
    torch.testing.assert_close(stats.hessian(), 2 / 6 * flat.t() @ flat)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 40), groups=st.integers(1, 12), nm=st.sampled_from([(1, 2), (2, 4), (4, 8), (1, 3), (5, 8)]),
       seed=st.integers(0, 2**16))
def test_property_n_of_m_counts(rows, groups, nm, seed):
    n, m = nm
    score = torch.rand(rows, groups * m, generator=torch.Generator().manual_seed(seed))
    mask = prune_n_of_m(score, n, m)
    assert (mask.view(rows, groups, m).sum(dim=2) == n).all()
    assert torch.equal(mask, prune_n_of_m(score.clone(), n, m))  # deterministic


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 90), sparsity=st.floats(0, 0.99), seed=st.integers(0, 2**16))
def test_property_exact_counts(rows, cols, sparsity, seed):
    score = torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed))
    assert (prune_lowest_per_row(score, sparsity).sum(dim=1) == int(cols * sparsity)).all()
    assert int(prune_lowest_in_matrix(score, sparsity).sum()) == int(rows * cols * sparsity)


# --- properties over random shapes, sparsities and N:M patterns (hypothesis) ------------------------

GROUPS = st.sampled_from(["row", "matrix", "nm"])
NM = st.sampled_from([(1, 2), (2, 4), (4, 8), (1, 4), (3, 4), (2, 8), (1, 3), (5, 8)])


def _group_view(mask_or_score: torch.Tensor, group: str, nm) -> torch.Tensor:
    """[groups, members]: the comparison groups a selector must count within."""
    rows, cols = mask_or_score.shape
    if group == "row":
        return mask_or_score
    if group == "matrix":
        return mask_or_score.reshape(1, -1)
    return mask_or_score.reshape(rows * cols // nm[1], nm[1])


@settings(max_examples=80, deadline=None)
@given(rows=st.integers(1, 24), width=st.integers(1, 10), group=GROUPS, nm=NM, sparsity=st.floats(0, 0.99),
       levels=st.sampled_from([2, 3, 1000]), seed=st.integers(0, 2**16))
def test_property_exact_counts_and_lowest_scores_per_group_even_with_ties(rows, width, group, nm, sparsity, levels, seed):
    """Each group prunes exactly its count, and no kept score is below a pruned one (ties included:
    `levels` = 2 or 3 makes most scores equal)."""
    cols = width * nm[1]
    g = torch.Generator().manual_seed(seed)
    score = torch.randint(0, levels, (rows, cols), generator=g).float()
    mask = select_mask(score, sparsity, group, nm if group == "nm" else None)
    groups, masks = _group_view(score, group, nm), _group_view(mask, group, nm)
    members = groups.shape[1]
    expected = nm[0] if group == "nm" else int(members * sparsity) if group == "row" else int(rows * cols * sparsity)
    assert (masks.sum(dim=1) == expected).all()
    pruned_max = torch.where(masks, groups, torch.tensor(-float("inf"))).amax(dim=1)
    kept_min = torch.where(masks, torch.tensor(float("inf")), groups).amin(dim=1)
    assert (pruned_max <= kept_min).all()


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 24), width=st.integers(1, 10), group=GROUPS, nm=NM, sparsity=st.floats(0, 0.95),
       seed=st.integers(0, 2**16))
def test_property_masks_are_deterministic_for_a_seed(rows, width, group, nm, sparsity, seed):
    def run():
        score = torch.rand(rows, width * nm[1], generator=torch.Generator().manual_seed(seed))
        return select_mask(score, sparsity, group, nm if group == "nm" else None), prune_adaptive_alpha(score, sparsity)

    (a, (va, alpha_a)), (b, (vb, alpha_b)) = run(), run()
    assert torch.equal(a, b) and torch.equal(va, vb) and alpha_a == alpha_b


@settings(max_examples=40, deadline=None)
@given(nsamples=st.integers(1, 12), seqlen=st.integers(1, 8), width=st.integers(1, 6), out=st.integers(1, 16),
       group=GROUPS, nm=NM, sparsity=st.floats(0, 0.95), cuts=st.lists(st.integers(1, 11), max_size=5),
       seed=st.integers(0, 2**16))
def test_property_masks_do_not_depend_on_batch_splitting(nsamples, seqlen, width, out, group, nm, sparsity, cuts, seed):
    """The calibration windows fed in one batch or in any split give the same statistics and masks.

    Activations are small integers so every sum is exact in floating point: any difference would be the
    accumulation's fault, not rounding's."""
    cols = width * nm[1]
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-8, 9, (nsamples, seqlen, cols), generator=g).float()
    w = torch.randn(out, cols, generator=g)
    whole = InputStats(cols, torch.device("cpu"), with_gram=True)
    whole.add(x)
    split = InputStats(cols, torch.device("cpu"), with_gram=True)
    bounds = sorted({c for c in cuts if c < nsamples} | {0, nsamples})
    for lo, hi in zip(bounds, bounds[1:]):
        split.add(x[lo:hi])
    assert split.nsamples == whole.nsamples == nsamples
    assert torch.equal(split.scaler_row, whole.scaler_row) and torch.equal(split.hessian(), whole.hessian())
    nm_arg = nm if group == "nm" else None
    assert torch.equal(select_mask(wanda_score(w, split), sparsity, group, nm_arg),
                       select_mask(wanda_score(w, whole), sparsity, group, nm_arg))
    # real-valued activations: the statistics agree to rounding
    xf = torch.randn(nsamples, seqlen, cols, generator=g)
    a, b = InputStats(cols, torch.device("cpu")), InputStats(cols, torch.device("cpu"))
    a.add(xf)
    for lo, hi in zip(bounds, bounds[1:]):
        b.add(xf[lo:hi])
    torch.testing.assert_close(a.scaler_row, b.scaler_row, rtol=1e-5, atol=1e-6)
