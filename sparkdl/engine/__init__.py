"""sparkdl's one inference engine.

Every stage that runs a model goes through here:

- :mod:`.handle`: a model serialized once on the driver (Keras 3 ``.keras`` bytes) and
  shipped by broadcast; executors never read the driver's files or download weights.
- :mod:`.model_cache`: each Python worker loads a given model once and keeps it.
- :mod:`.runtime`: TensorFlow threads sized to the task's cores, the task's GPU only.
- :mod:`.image_udf`: one Arrow UDF per stage; resize, preprocess and predict inside it.
- :mod:`.savedmodel`: TensorFlow SavedModel signatures (TFTransformer, TFImageTransformer):
  the SavedModel's files broadcast as one zip, loaded once per worker, fed from Arrow.
"""
