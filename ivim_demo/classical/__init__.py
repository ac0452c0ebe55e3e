"""Per-voxel classical fits: least squares, segmented, and the exact Bayesian posterior."""
