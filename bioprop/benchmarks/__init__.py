"""Further benchmarks: each module here calls :func:`bioprop.bench.register` on import."""
