"""Tolerances for floats that reach the same value through other shapes, chunks, threads or kernels.

Repeating a computation with the same shapes on one machine gives the same bits, and a test may say so.
The same value computed through another matrix shape (more voxels in a call, another chunk size), on
another CPU (Intel or AMD, AVX2 or AVX-512) or another MKL / ATen code path is rounded differently: a sum
of n terms in a dtype with machine epsilon eps may move by up to about n * eps times the sum of the
terms' magnitudes, whatever the order (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
sec. 3.1). These helpers turn that bound into a test tolerance, so no test depends on one machine's
rounding. A test using them should also show that the change it guards against exceeds the tolerance.
"""
import numpy as np


def rounding(dtype, n_terms, layers=1):
    """Bound on the relative rounding of ``layers`` chained sums of ``n_terms`` terms in ``dtype``:
    ``layers * n_terms * eps``."""
    return layers * n_terms * float(np.finfo(dtype).eps)


def network_rounding(net):
    """``rounding`` of a network's float32 forward pass: one sum per linear layer, each as long as the
    widest layer input."""
    import torch

    linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    if not linear:  # stacked or grouped layers: their weights' last dimension is the input width
        linear = [p for name, p in net.named_parameters() if name.endswith("weight") and p.dim() >= 2]
        widest = max(p.shape[-1] for p in linear)
    else:
        widest = max(m.in_features for m in linear)
    return rounding(np.float32, widest, len(linear))


def assert_close_to_rounding(actual, expected, tol, *, scale=None, err_msg=""):
    """``actual`` equals ``expected`` up to ``tol`` times ``scale``, the magnitude of the terms that were
    summed into them (default: the largest ``|expected|`` of the array: a small value carries the
    rounding of the larger terms summed into it). NaNs must sit in the same places."""
    expected = np.asarray(expected, dtype=float)
    if scale is None:
        finite = np.isfinite(expected)
        scale = float(np.abs(expected[finite]).max()) if finite.any() else 0.0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale, err_msg=err_msg)


def assert_estimates_close_to_rounding(actual, expected, net, *, err_msg=""):
    """Two ``predict`` results (``IVIMParams``) of ``net`` equal up to the float32 rounding of its
    forward pass (``network_rounding``). The network sees signals divided by S(b=0), so its activations,
    and the terms its last layer sums into Dp, Dt and Fp, are of order 1: an output far below 1 (Dt
    about 1e-3) is a difference of such terms and carries their absolute rounding (scale 1). S0 is the
    network's relative S0 (order 1) times the voxel's S(b=0): relative rounding per voxel."""
    tol = network_rounding(net)
    for name in ("Dp", "Dt", "Fp"):
        assert_close_to_rounding(getattr(actual, name), getattr(expected, name), tol, scale=1.0,
                                 err_msg=f"{name} {err_msg}")
    np.testing.assert_allclose(actual.S0, expected.S0, rtol=tol, atol=0, err_msg=f"S0 {err_msg}")


#: fit_bayes's posterior means on its float32 path against float64, relative to each parameter's largest
#: value (the grid holds a parameter in units of its box): within 4e-6 measured under MKL's default,
#: COMPATIBLE and AVX2 paths and ATen's default kernels (``likelihood._F32_ROUNDING``); two float32 evaluations
#: through other chunks differ by at most twice that, the brute-force float64 posterior by at most that
#: plus the interpolation of log I0e (< 1e-7). Use it with ``assert_close_to_rounding``'s default scale.
BAYES_F32_RTOL = 1e-5


def bayes_float64_rtol(sigma):
    """fit_bayes's float64 path (high SNR): its log-likelihood sums about 64 features whose Gaussian terms
    reach 1 / sigma^2 (normalised signals), each rounded by ``rounding(float64, 64)``; a posterior weight
    exp(loglik) moves by as much, relative, and so does the posterior mean."""
    return rounding(np.float64, 64) / sigma**2
