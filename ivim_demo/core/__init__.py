"""The bottom layer: the IVIM signal model and parameter boxes, input checks, metrics, torch threads."""
