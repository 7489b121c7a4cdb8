"""Training: the one ``train`` entry point, the optimizer builder and evaluation."""
