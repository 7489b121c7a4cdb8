"""Further benchmarks: each module here calls :func:`bioprop.experiments.bench.register` on import."""
