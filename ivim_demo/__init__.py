"""ivim-demo: the thin package behind the IVIM-NET teaching notebooks.

Reproduces the demo of Barbieri et al., "Deep learning how to fit an
intravoxel incoherent motion model to diffusion-weighted MRI", MRM
2020;83:312-321 (arXiv 1903.00095).  Parameter order is always
``(Dp, Dt, Fp, S0)``; b in s/mm^2, D in mm^2/s; arrays are ``(..., n_b)``.
"""
from .anatomy import TISSUES, AnatomicalPhantom, anatomical_phantom
from .artefacts import (
    load_dataset,
    load_or_make_dataset,
    load_or_make_model,
    load_table,
    save_dataset,
    save_table,
)
from .compare import ablation, compare_at_snr, fit_all, score
from .examples import CITATION, EXAMPLES, load_example, phantom_example
from .checkpoint import load_model, save_model
from .explorer import B_VALUE_SETS, explore, explorer_network, explorer_widget, plot_explore
from .fit import estimate_sigma, fit_bayes, fit_lsq, fit_segmented, lsq_reference
from .infer import decide_labelling, predict, swap_guard
from .mask import has_background, make_mask, otsu_threshold
from .metrics import (
    AGREEMENT,
    PARAMS,
    check_agreement,
    cv_across,
    markdown_table,
    normalised_bias,
    nrmse,
    pivot,
    region_stats,
    roi_medians,
    spearman,
)
from .model import FIT_BOUNDS, PARAMETER_BOX, SEED_B_VALUES, IVIMParams, ivim
from .networks import IVIMNet, IVIMNetOptim
from .nifti import average_directions, load_dwi, load_mask, save_dwi, save_maps
from .quality import quality_measures, quality_warnings, residual
from .recipes import (
    ABLATION,
    IN_VIVO_BOX,
    IN_VIVO_LOG,
    OPTIM_LR,
    RECIPES,
    seed_network,
    train_for_snr,
    train_jobs,
    train_many,
    train_on_scan,
)
from .plots import (
    plot_ablation,
    MAP_LIMITS,
    plot_b_images,
    plot_estimate_vs_truth,
    plot_images,
    plot_loss,
    plot_maps,
    plot_metric_vs_snr,
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
    scan_like_data,
    training_data,
)
from .train import TrainHistory, device, train
from .methods import CLASSICAL_METHODS, DEFAULT_METHOD, LABELS, METHODS, NETWORK_METHODS
from .volume import VolumeFit, fit_volume, method_of

__version__ = "0.1.0"
