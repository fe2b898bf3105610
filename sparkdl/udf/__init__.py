"""Keras models as Spark SQL functions: ``registerKerasImageUDF`` (image structs) and
``registerKerasUDF`` (arrays), usable from the DataFrame API and from plain SQL."""
