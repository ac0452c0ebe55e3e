"""Simulated signals: Rician noise, training data, the seed's phantom, an anatomical phantom."""
