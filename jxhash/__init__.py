"""jxhash: deep cross-modal hashing in JAX/Flax.

Submodules: `data` (datasets), `metrics` (Hamming ranking), `losses` (shared loss terms),
`nets` (Flax encoders), `methods` (the METHODS registry), `train` (the generic trainer),
`checkpoint` (orbax save/restore), `index` (packed-code search), `parallel` (device mesh).
"""

__version__ = "0.1.0"
