"""The oracles of bench/fidelity_bounds.py measure what they claim (small grids, not the study)."""
import torch

from bench.fidelity_bounds import _plan, global_oracle, tile_oracle


def _tokens(n, c=32, seed=0):
    return torch.randn(1, n, c, generator=torch.Generator().manual_seed(seed))


def test_global_oracle_is_exact_on_groups_of_copies_and_positive_otherwise():
    base = _tokens(64)
    copies = torch.cat([base, base], dim=1)  # 64 distinct outputs, each twice
    assert global_oracle(copies, 64) < 1e-12
    assert global_oracle(copies, 32) > 0.1  # fewer groups than distinct outputs must cost
    assert global_oracle(_tokens(128, seed=1), 128) < 1e-12


def test_tile_oracle_is_zero_when_merged_tokens_share_a_destinations_output():
    x = _tokens(16 * 16)
    plan = _plan(x, 16, 16)
    y = plan.restore(_tokens(plan.merged_tokens, seed=2))  # every merged token copies its destination
    assert tile_oracle(plan, y) < 1e-12
    assert tile_oracle(plan, _tokens(16 * 16, seed=3)) > 0.1
