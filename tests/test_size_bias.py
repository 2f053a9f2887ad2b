"""add_size_channel: attention on the extended heads equals attention with an explicit log-size bias."""
import pytest
import torch
import torch.nn.functional as F
from conftest import seeded

from mame_core.size_bias import add_size_channel, biased_attention_reference


@pytest.mark.parametrize("head_dim", [8, 40, 64, 7])
@pytest.mark.parametrize("scale_from_width", [True, False])
def test_extra_channel_is_the_log_size_bias(head_dim, scale_from_width):
    gen = seeded(head_dim)
    heads, b, n, m = 3, 2, 11, 6
    q = torch.randn(b, n, heads * head_dim, generator=gen, dtype=torch.float64)
    k = torch.randn(b, m, heads * head_dim, generator=gen, dtype=torch.float64)
    v = torch.randn(b, m, heads * head_dim, generator=gen, dtype=torch.float64)
    log_size = torch.log(torch.randint(1, 5, (b, m), generator=gen).double())
    expected = biased_attention_reference(q, k, v, log_size, heads)
    q2, k2, v2, restore = add_size_channel(q, k, v, log_size, heads, scale_from_width=scale_from_width)
    assert q2.shape[-1] % (8 * heads) == 0
    d2 = q2.shape[-1] // heads
    split = lambda t: t.reshape(b, t.shape[1], heads, d2).transpose(1, 2)  # noqa: E731
    kwargs = {} if scale_from_width else {"scale": head_dim ** -0.5}
    out = F.scaled_dot_product_attention(split(q2), split(k2), split(v2), **kwargs)
    out = restore(out.transpose(1, 2).reshape(b, n, heads * d2))
    torch.testing.assert_close(out, expected)
    # and the bias matters: without it the output differs
    assert (biased_attention_reference(q, k, v, torch.zeros_like(log_size), heads) - expected).abs().max() > 1e-3


def test_four_d_layout():
    gen = seeded(1)
    q, k, v = (torch.randn(2, 4, 5, 16, generator=gen) for _ in range(3))
    log_size = torch.rand(2, 5, generator=gen)
    q2, k2, v2, restore = add_size_channel(q, k, v, log_size, 4)
    out = restore(F.scaled_dot_product_attention(q2, k2, v2))
    logits = q @ k.transpose(-1, -2) / 4.0 + log_size[:, None, None, :]
    torch.testing.assert_close(out, torch.softmax(logits, -1) @ v, rtol=1e-4, atol=1e-5)
