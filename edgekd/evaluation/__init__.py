"""Evaluation of runs and bundles: zero-shot (seen/unseen), few-shot, long-tail buckets and teacher fidelity.

`metrics` is numpy-only; `fewshot` adds a torch logistic probe; `embed` runs models over an image folder;
`evaluate` ties them together (used by `edgekd eval`).
"""
