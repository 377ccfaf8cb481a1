"""hazardseg: semantic + anomaly segmentation experiments on road scenes."""

__version__ = "0.1.0"
