"""The run stages of train.py / eval.py (see :mod:`hazardseg.pipeline` for the order)."""
