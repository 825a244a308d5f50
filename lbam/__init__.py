"""lbam: the Lightweight Bottleneck Attention Module (CN114118415A) and its rivals, with a reproduction harness."""

__version__ = "0.1.0"
