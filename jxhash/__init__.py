"""jxhash: deep cross-modal hashing in JAX/Flax.

Submodules: `data` (datasets), `metrics` (Hamming ranking), `losses` (shared loss terms),
`nets` (Flax encoders), `methods` (the METHODS registry), `train` (the generic trainer),
`checkpoint` (orbax save/restore), `index` (packed-code search), `parallel` (device mesh).
"""

__version__ = "0.1.0"

from jxhash import data, losses, metrics, nets, parallel  # noqa: E402
from jxhash import methods, train  # noqa: E402
from jxhash import checkpoint, index  # noqa: E402

__all__ = ["checkpoint", "data", "index", "losses", "methods", "metrics", "nets", "parallel", "train"]
