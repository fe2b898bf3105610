"""1.x import path of :func:`sparkdl.registerKerasImageUDF` (deprecated).

Deep Learning Pipelines 1.x defined ``registerKerasImageUDF`` here; import it from
``sparkdl`` instead. See "Migrating from Deep Learning Pipelines 1.x" in the user guide for
what changed (a 1.x ``preprocessor`` took a file path).
"""
import warnings

from sparkdl.udf.keras_image_udf import registerKerasImageUDF

__all__ = ["registerKerasImageUDF"]

warnings.warn("sparkdl.udf.keras_image_model is the 1.x module name; use "
              "`from sparkdl import registerKerasImageUDF`", DeprecationWarning, stacklevel=2)
