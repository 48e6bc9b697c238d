"""edgegw: an industrial-internet edge gateway."""

__version__ = "0.1.0"
