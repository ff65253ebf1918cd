"""Everything that needs torch: tensor adapters, build, export, load_model.

This is the only package that imports torch; the rest of modelpack (the
container, the spec and its validation) works without it.
"""
