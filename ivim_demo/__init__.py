"""ivim-demo: the thin package behind the IVIM-NET teaching notebooks.

Reproduces the demo of Barbieri et al., "Deep learning how to fit an
intravoxel incoherent motion model to diffusion-weighted MRI", MRM
2020;83:312-321 (arXiv 1903.00095).  Parameter order is always
``(Dp, Dt, Fp, S0)``; b in s/mm^2, D in mm^2/s; arrays are ``(..., n_b)``.

Public names (``iv.fit_lsq``, ``iv.IVIMNet``, ...) are imported from their
submodule on first use, so ``import ivim_demo`` and ``import ivim_demo.signal_model``
stay light: torch and matplotlib load only when something needs them.
"""
import importlib

__version__ = "0.1.0"

#: Submodule of every public name.
_SOURCES = {
    "anatomy": ["TISSUES", "AnatomicalPhantom", "anatomical_phantom"],
    "handoff": ["dataset_settings", "load_dataset", "load_or_make_dataset", "load_or_make_model", "load_table",
                "save_dataset", "save_table"],
    "cohort": ["COHORT_COLUMNS", "Acquisition", "Scan", "find_scans", "fit_cohort", "fit_scan", "group_scans",
               "read_b_values", "train_models"],
    "compare": ["SPREAD_COLUMNS", "ablation", "compare_at_snr", "compare_over_snr", "fit_all", "score"],
    "exercises": ["EXERCISES", "check"],
    "examples": ["CITATION", "EXAMPLES", "load_example", "phantom_example", "reference_roi_medians",
                 "write_example_study"],
    "checkpoint": ["load_model", "save_model"],
    "explorer": ["B_VALUE_SETS", "explore", "explorer_network", "explorer_widget", "plot_explore"],
    "fit": ["estimate_sigma", "fit_bayes", "fit_lsq", "fit_segmented", "lsq_reference"],
    "infer": ["decide_labelling", "predict", "swap_guard"],
    "mask": ["has_background", "make_mask", "otsu_threshold"],
    "methods": ["CLASSICAL_METHODS", "DEFAULT_METHOD", "LABELS", "METHODS", "NETWORK_METHODS"],
    "metrics": ["AGREEMENT", "PARAMS", "check_agreement", "cv_across", "markdown_table", "normalised_bias", "nrmse",
                "pivot", "region_stats", "roi_medians", "spearman"],
    "signal_model": ["FIT_BOUNDS", "PARAMETER_BOX", "SEED_B_VALUES", "IVIMParams", "ivim"],
    "networks": ["IVIMNet", "IVIMNetOptim", "IVIMNetUncertainty", "UNCERTAINTY_SNR_RANGE"],
    "posterior": ["Posterior"],
    "nifti": ["average_directions", "load_dwi", "load_mask", "save_dwi", "save_maps"],
    "quality": ["quality_measures", "quality_warnings", "residual"],
    "recipes": ["ABLATION", "ABLATION_EPOCH_CAP", "IN_VIVO_BOX", "IN_VIVO_LOG", "OPTIM_LR", "RECIPES", "SEED_TRAINING",
                "SNR_RANGE_TRAINING", "STACK_SIZE", "seed_network", "train_for_snr", "train_jobs", "train_many",
                "train_on_scan"],
    "plots": ["plot_ablation", "plot_calibration", "plot_cohort_rois", "MAP_LIMITS", "SCAN_LIMITS", "plot_b_images", "plot_estimate_vs_truth", "plot_images", "plot_loss",
              "plot_maps", "plot_metric_vs_snr", "plot_parameter_distributions", "plot_signal_examples",
              "save_figure"],
    "simulate": ["PHANTOM_REGIONS", "add_rician_noise", "phantom", "phantom_regions", "sample_params",
                 "scan_like_data", "training_data"],
    "training": ["TrainHistory", "device", "train", "training_warnings"],
    "ensemble": ["train_stack"],
    "calibration": ["coverage", "posterior_limits"],
    "image_fit": ["VolumeFit", "fit_volume", "method_of"],
}
_EXPORTS = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = [*_EXPORTS, "__version__"]


#: Submodules reachable as attributes (``iv.fit``, ``iv.checks``), as when everything was imported eagerly.
_SUBMODULES = {*_SOURCES, "checks", "cli"}


def __getattr__(name):
    """Import a public name (or a submodule) on first access (PEP 562)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})
