"""Distillation: pure losses, DistillTask, cached-view data, the training loop, checkpoints and DDP helpers."""
