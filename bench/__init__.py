"""LabLink benchmarks: each module is runnable with ``python -m bench.<name>``."""
