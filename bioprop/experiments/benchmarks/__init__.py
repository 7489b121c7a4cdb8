"""Further benchmarks: each module calls :func:`bioprop.experiments.bench.register` on import."""
