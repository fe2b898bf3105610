"""Keras models as Spark SQL functions."""
