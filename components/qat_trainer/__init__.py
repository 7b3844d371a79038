"""QATTrainer: quantization-aware training, incl. prune/cluster-preserving schemes, via tfmot."""
