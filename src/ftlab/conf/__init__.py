"""Hydra's config groups: the package `ftlab.conf`, found by an installed ftlab (editable or wheel)."""
