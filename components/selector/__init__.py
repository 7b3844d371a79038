"""VariantSelector: the Pareto front of the variants, and the one that ships."""
