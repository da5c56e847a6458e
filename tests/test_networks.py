"""The networks: layers that compute what nn.Linear computes, the Gaussian actor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sk_o2o.rl.networks import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    GaussianPolicy,
    _EnsembleLinear,
    _Linear,
)


@pytest.mark.parametrize(("n_in", "n_out"), [(5, 8), (100, 8), (8, 1), (3, 2)])
def test_linear_layers_compute_what_nn_linear_computes(n_in, n_out):
    """Catches a bug (the narrow-input path reads the weight reshaped, not
    transposed): the CPU layouts must not change the function, or a model
    trained on the CPU predicts differently on a GPU and the state dict does
    not mean what nn.Linear's means."""
    torch.manual_seed(0)
    layer = _Linear(n_in, n_out)
    x = torch.randn(7, n_in)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    ens = _EnsembleLinear(2, n_in, n_out)
    xs = torch.randn(2, 7, n_in)
    expected = torch.einsum("nbi,nio->nbo", xs, ens.weight) + ens.bias
    torch.testing.assert_close(ens(xs), expected)


def test_gaussian_policy_log_prob_is_the_normal_density_and_std_is_clipped():
    """Catches a bug (log-density averaged over action dimensions) and another (std()
    not clipped to IQL's log-std range)."""
    torch.manual_seed(0)
    policy = GaussianPolicy(3, 2, (8,))
    obs, actions = torch.randn(5, 3), torch.rand(5, 2) * 2 - 1
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.3, 0.4]))
        expected = (
            torch.distributions.Normal(policy.mode(obs), policy.log_std.exp())
            .log_prob(actions)
            .sum(-1)
        )
        torch.testing.assert_close(policy.log_prob(obs, actions), expected)
        policy.log_std.copy_(torch.tensor([-10.0, 10.0]))
        torch.testing.assert_close(
            policy.std(), torch.tensor([LOG_STD_MIN, LOG_STD_MAX]).exp()
        )
