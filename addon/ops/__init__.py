"""Operators and their runs: run.py (the outcome, failure(), and the modal runner Generate,
Fit Face, Check and Install share, which registers each run in core/runs.py), then one module
per feature (the operator) and, for Generate and Fit Face, its run (*_run.py: inputs
gathered, backend job, write)."""
