"""Code books: the legal patterns, codes and thresholds of METHOD.md sections 1 and 3."""

import itertools

import pytest
import torch

from ge2mst.core.coding import ExpGCodeBook, UniformCodeBook, check_time_groups
from ge2mst.errors import ConfigError

VALID_TG = [(T, G) for T in range(1, 9) for G in range(1, T + 1) if T % G == 0]


def test_method_example_t4_g2():
    book = ExpGCodeBook(4, 2)
    assert book.codes.tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    assert book.n_max == 10 and book.num_levels == 9
    assert book.pre.tolist() == [7.0, 3.0, 1.5, 0.5]
    assert book.beta.tolist() == [8, 4, 2, 1]
    # code 6 is the pattern 0110, code 10 is 1010
    assert book.patterns[book.codes.tolist().index(6)].tolist() == [0, 1, 1, 0]
    assert book.patterns[book.codes.tolist().index(10)].tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize("T,G", VALID_TG)
def test_codebook_is_every_legal_pattern_once(T, G):
    book = ExpGCodeBook(T, G)
    m = T // G
    legal = [p for p in itertools.product((0, 1), repeat=T)
             if all(sum(p[g * m:(g + 1) * m]) <= 1 for g in range(G))]
    assert book.num_levels == (m + 1) ** G == len(legal)
    codes = [sum(2 ** (T - 1 - t) * s for t, s in enumerate(p)) for p in legal]
    assert book.codes.tolist() == sorted(codes)
    # the stored pattern of each code decodes to that code
    assert torch.equal(book.code_of(book.patterns.T), book.codes)
    assert not book.illegal_mask(book.patterns.T).any()


@pytest.mark.parametrize("T", range(1, 9))
def test_extreme_groupings(T):
    assert ExpGCodeBook(T, T).codes.tolist() == list(range(2 ** T))  # uniform, 2**T - 1 steps
    assert ExpGCodeBook(T, 1).codes.tolist() == [0] + [2 ** k for k in range(T)]  # Exp-IF


@pytest.mark.parametrize("T,G", VALID_TG)
def test_pre_threshold_is_a_boundary_between_adjacent_codes(T, G):
    """Form B's threshold at step t separates 'fire at t' from 'do not fire at t' for any prefix."""
    book = ExpGCodeBook(T, G)
    m = T // G
    codes = book.codes.tolist()
    for t in range(T):
        fire = [c for c, p in zip(codes, book.patterns.tolist(), strict=True) if p[t]]
        open_group = [c for c, p in zip(codes, book.patterns.tolist(), strict=True)
                      if not any(p[(t // m) * m:t + 1]) and not any(p[:t])]
        smallest_fire = min(c for c in fire if c < 2 ** (T - t))
        largest_quiet = max(open_group)
        assert book.pre[t] == (smallest_fire + largest_quiet) / 2


def test_illegal_mask_flags_two_spikes_in_a_group():
    book = ExpGCodeBook(4, 2)
    spikes = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]]).T
    assert book.illegal_mask(spikes).tolist() == [True, False, True, False]


@pytest.mark.parametrize("T,G,match", [
    (4, 3, "must divide"), (0, 1, "at least 1"), (4, 0, "1..T"), (4, 5, "1..T"),
    (4.0, 2, "whole number"), (True, 1, "whole number"), (20, 2, "too large"),
])
def test_impossible_time_groups(T, G, match):
    with pytest.raises(ConfigError, match=match):
        check_time_groups(T, G)


def test_uniform_codebook():
    book = UniformCodeBook(4)
    assert book.codes.tolist() == [0, 1, 2, 3, 4]
    assert book.mids.tolist() == [0.5, 1.5, 2.5, 3.5]
    with pytest.raises(ConfigError):
        UniformCodeBook(0)
