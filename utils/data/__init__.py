"""Datasets, joint transforms and palettes (the Shapes dataset is chapter 00's)."""
