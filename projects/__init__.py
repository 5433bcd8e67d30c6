"""Experiments built on mmseg_vpt, kept outside the installed package (as
mmsegmentation's ``projects/``). Run from the repository root, so that
``import projects.<name>`` finds them."""
