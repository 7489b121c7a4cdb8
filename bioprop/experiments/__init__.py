"""The experiment-facing layer: tasks, ``compare``, the benchmark harness and the CLI."""
