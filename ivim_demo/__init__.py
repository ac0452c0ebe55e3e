"""ivim-demo: the thin package behind the IVIM-NET teaching notebooks.

Reproduces the demo of Barbieri et al., "Deep learning how to fit an
intravoxel incoherent motion model to diffusion-weighted MRI", MRM
2020;83:312-321 (arXiv 1903.00095).  Parameter order is always
``(Dp, Dt, Fp, S0)``; b in s/mm^2, D in mm^2/s; arrays are ``(..., n_b)``.

Public names (``iv.fit_lsq``, ``iv.IVIMNet``, ...) are imported from their
submodule on first use, so ``import ivim_demo`` and ``import ivim_demo.core.signal_model``
stay light: torch and matplotlib load only when something needs them.
"""
import importlib

__version__ = "0.1.0"

#: Submodule of every public name.
_SOURCES = {
    "simulation.anatomy": ["TISSUES", "AnatomicalPhantom", "anatomical_phantom"],
    "teaching.handoff": ["dataset_settings", "load_dataset", "load_or_make_dataset", "load_or_make_model", "load_table",
                "save_dataset", "save_table"],
    "imaging.cohort": ["fit_cohort", "fit_scan", "train_models"],
    "imaging.study": ["Acquisition", "StudyScan", "find_scans", "group_scans", "read_b_values"],
    "teaching.compare": ["ABLATION", "ABLATION_EPOCH_CAP", "ablation", "compare_at_snr", "compare_over_snr", "fit_all", "score"],
    "teaching.exercises": ["EXERCISES", "WHY_QUESTIONS", "check_answer"],
    "teaching.examples": ["CITATION", "EXAMPLES", "load_example", "phantom_example", "reference_roi_medians",
                 "write_example_study"],
    "nets.checkpoint": ["load_model", "save_model"],
    "teaching.explorer": ["B_VALUE_SETS", "explore", "explorer_network", "explorer_widget", "plot_explore"],
    "classical.map_fit": ["EmpiricalPrior", "empirical_prior", "fit_map"],
    "teaching.barbieri": ["barbieri_data",
                          "compare_barbieri"],
    "classical.fit": ["estimate_sigma", "fit_bayes", "fit_lsq", "fit_segmented", "lsq_reference"],
    "nets.infer": ["decide_labelling", "predict", "swap_guard"],
    "imaging.mask": ["has_background", "make_mask"],
    "imaging.methods": ["DEFAULT_METHOD", "LABELS", "METHODS", "NETWORK_METHODS", "Method",
                        "register"],
    "core.metrics": ["AGREEMENT", "PARAMS", "SCAN_CHECKS", "check_agreement", "check_scan", "cv_net", "markdown_table", "normalised_bias", "nrmse",
                "pivot", "region_stats", "repeatability", "roi_medians", "spearman"],
    "core.signal_model": ["FIT_BOUNDS", "PARAMETER_BOX", "SEED_B_VALUES", "IVIMParams", "ivim"],
    "core.prior": ["IN_VIVO_BOX", "IN_VIVO_LOG", "IN_VIVO_PRIOR", "SEED_PRIOR", "Prior"],
    "nets.networks": ["IVIMNet", "IVIMNetOptim", "IVIMNetUncertainty", "UNCERTAINTY_SNR_RANGE"],
    "classical.posterior": ["Posterior"],
    "imaging.halves": ["HALVES", "split_halves"],
    "imaging.nifti": ["Scan", "average_directions", "load_dwi", "load_mask", "read_scan", "save_dwi",
                      "save_maps"],
    "imaging.quality": ["quality_measures", "quality_warnings", "residual"],
    "nets.recipes": ["OPTIM_LR", "RECIPES", "SEED_TRAINING", "SNR_RANGE_TRAINING", "seed_network", "train_for_snr"],
    "nets.scan_training": ["train_on_scan"],
    "nets.jobs": ["train_jobs", "train_many"],
    "imaging.plots": ["plot_ablation", "plot_calibration", "plot_cohort_rois", "SCAN_LIMITS", "plot_b_images", "plot_estimate_vs_truth", "plot_images", "plot_loss",
              "plot_maps", "plot_metric_vs_snr", "plot_parameter_distributions", "plot_signal_examples",
              "save_figure"],
    "simulation.simulate": ["PHANTOM_REGIONS", "add_rician_noise", "phantom", "phantom_regions", "sample_params",
                 "scan_like_data", "training_data"],
    "nets.training": ["TrainHistory", "device", "train", "training_warnings"],
    "nets.ensemble": ["train_stack"],
    "nets.published": ["kaandorp_data", "kaandorp_rows", "reproduce_kaandorp",
                       "train_published"],
    "nets.any_protocol": ["IVIMNetAnyProtocol"],
    "nets.protocols": ["PROTOCOL_RANGE", "Protocol", "draw_protocols"],
    "nets.pretrained": ["PRETRAINED_TRAINING", "load_pretrained", "train_pretrained"],
    "teaching.calibration": ["calibration_voxels", "coverage", "posterior_limits", "protocol_scores"],
    "imaging.image_fit": ["VolumeFit", "fit_volume"],
}
_EXPORTS = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = [*_EXPORTS, "__version__"]


#: Modules reachable as attributes by their own name (``iv.fit``, ``iv.checks``), as before the subpackages,
#: and the subpackages themselves (``iv.classical``).
_SUBMODULES = {**{path.rsplit(".", 1)[-1]: path for path in _SOURCES}, "checks": "core.checks", "cli": "cli",
               **{name: name for name in ("core", "simulation", "classical", "nets", "imaging", "teaching")}}


def __getattr__(name):
    """Import a public name (or a submodule) on first access (PEP 562)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{_SUBMODULES[name]}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})
