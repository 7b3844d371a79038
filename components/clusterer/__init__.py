"""Clusterer: weight clustering with fine-tuning, via tfmot."""
