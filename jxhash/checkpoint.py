"""The checkpoint API in one place: the training store and `restore` for encoding.

    from jxhash import checkpoint
    enc = checkpoint.restore("checkpoints/dcmh-wikipedia-32bits-seed0-3f9a1c2e")
    codes = enc.encode("image", features)        # (N, 32) int8 in {-1, +1}

`CheckpointStore`, `run_metadata`, `metadata` and `tree_digest` are `jxhash.runs.store`'s (what a
run saves and resumes from); `restore` and `Encoder` are `jxhash.inference`'s (reading a run to
encode with it, without any training objects). This module only names them together, as the
published API (`jxhash.checkpoint.restore`) does.
"""

from jxhash.inference import Encoder, restore
from jxhash.runs.store import CHECKPOINT_FORMAT, CheckpointStore, json_digest, metadata, run_metadata, tree_digest

__all__ = ["CHECKPOINT_FORMAT", "CheckpointStore", "Encoder", "json_digest", "metadata", "restore", "run_metadata",
           "tree_digest"]
