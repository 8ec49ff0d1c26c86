"""Rematerialisation policies by name, for `ModelConfig.remat_policy`."""
from __future__ import annotations

import jax

# name -> what the backward pass may keep from the forward pass of a layer
_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,  # keep only the layer inputs
    "dots": jax.checkpoint_policies.checkpoint_dots,  # keep every matmul output
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # weights matmuls only
    "save_attn_mlp_out": jax.checkpoint_policies.save_only_these_names("attn_out", "mlp_out"),
}


def remat_policy(name: str):
    """Returns the jax.checkpoint policy for a name, or None for 'none' (no rematerialisation)."""
    if name == "none":
        return None
    if name not in _POLICIES:
        raise ValueError(f"ModelConfig.remat_policy={name!r} is not one of {('none',) + tuple(_POLICIES)}")
    return _POLICIES[name]
