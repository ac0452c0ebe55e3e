import numpy as np
import pytest
import torch

import ivim_demo as iv


def test_ivim_known_values():
    b = np.array([0.0, 100.0, 1000.0])
    s = iv.ivim(b, 0.05, 0.001, 0.2, 1000.0)
    expected = 1000 * (0.2 * np.exp(-b * 0.05) + 0.8 * np.exp(-b * 0.001))
    np.testing.assert_allclose(s, expected)
    assert s[0] == pytest.approx(1000.0)
    assert s[2] == pytest.approx(1000 * (0.2 * np.exp(-50) + 0.8 * np.exp(-1)))


def test_ivim_without_perfusion_is_monoexponential():
    b = iv.SEED_B_VALUES
    np.testing.assert_allclose(iv.ivim(b, 0.05, 0.0012, 0.0), np.exp(-b * 0.0012))


def test_ivim_numpy_and_torch_agree_and_broadcast():
    b = iv.SEED_B_VALUES
    p = np.array([[0.02, 0.001, 0.1], [0.08, 0.0015, 0.35]])
    s_np = iv.ivim(b, p[:, :1], p[:, 1:2], p[:, 2:3])
    bt, pt = torch.tensor(b), torch.tensor(p)
    s_t = iv.ivim(bt, pt[:, :1], pt[:, 1:2], pt[:, 2:3])
    assert isinstance(s_t, torch.Tensor)
    assert s_np.shape == (2, len(b))
    np.testing.assert_allclose(s_t.numpy(), s_np, rtol=1e-12)


def test_params_order_is_fixed():
    assert iv.IVIMParams._fields == ("Dp", "Dt", "Fp", "S0")
    assert iv.SEED_B_VALUES.tolist() == [0, 10, 20, 60, 150, 300, 500, 1000]
    assert iv.PARAMETER_BOX == {"Dp": (0.01, 0.1), "Dt": (0.0005, 0.002), "Fp": (0.1, 0.4)}
