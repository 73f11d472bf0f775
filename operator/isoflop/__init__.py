"""isoflop: scaling-law sweeps for text-to-image Diffusion Transformers."""

__version__ = "0.1.0"
