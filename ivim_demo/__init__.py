"""ivim-demo: the thin package behind the IVIM-NET teaching notebooks.

Reproduces the demo of Barbieri et al., "Deep learning how to fit an
intravoxel incoherent motion model to diffusion-weighted MRI", MRM
2020;83:312-321 (arXiv 1903.00095).  Parameter order is always
``(Dp, Dt, Fp, S0)``; b in s/mm^2, D in mm^2/s; arrays are ``(..., n_b)``.
"""
from .artefacts import load_dataset, load_or_make_dataset, load_or_make_model, save_dataset
from .checkpoint import load_model, save_model
from .infer import predict, swap_guard
from .metrics import cv_across, markdown_table, normalised_bias, nrmse, region_stats, spearman
from .model import PARAMETER_BOX, SEED_B_VALUES, IVIMParams, ivim
from .networks import IVIMNet
from .plots import (
    MAP_LIMITS,
    plot_b_images,
    plot_estimate_vs_truth,
    plot_loss,
    plot_maps,
    plot_parameter_distributions,
    plot_signal_examples,
    save_figure,
)
from .simulate import (
    PHANTOM_REGIONS,
    add_rician_noise,
    phantom,
    phantom_regions,
    sample_params,
    training_data,
)
from .train import TrainHistory, device, train

__version__ = "0.1.0"
