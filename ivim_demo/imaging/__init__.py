"""Whole images: NIfTI in and out, masks, quality checks, figures of maps, fitting a masked image, the method names, a scan's outputs, cohorts."""
