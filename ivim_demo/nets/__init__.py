"""Networks: architectures, training (one or many stacked), inference, checkpoints, recipes."""
