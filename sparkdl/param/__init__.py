"""Params shared by sparkdl stages, and persistence for params that are not JSON."""
