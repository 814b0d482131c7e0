"""Operators and their runs: run.py (the active run, its outcome, the modal runner shared by
Generate, Fit Face, Check and Install, failure()), then one module per feature (the operator)
and, for Generate and Fit Face, its run (*_run.py: inputs gathered, backend job, write)."""
