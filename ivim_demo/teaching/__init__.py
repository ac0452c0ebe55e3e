"""What the notebooks use on top: comparisons, calibration, the explorer, exercises, hand-off files, shipped examples."""
