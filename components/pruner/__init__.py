"""Pruner: magnitude pruning (unstructured or 2:4) with fine-tuning, via tfmot."""
