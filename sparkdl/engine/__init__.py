"""sparkdl's one inference engine: the only place that ships models, batches rows, loads
models and calls ``predict``. Stages, SQL registrars and the estimator are compositions of it.

- :mod:`.shipping`: model source (Keras object, ``.keras``/``.h5`` path, ``.keras`` bytes,
  registry name + weights, SavedModel signature) -> content key -> :class:`~.shipping.Handle`
  (shipped once, one LRU on the driver) -> the worker's cached
  :class:`~.shipping.LoadedModel`, whose ``predict(batch)`` is where every model runs. Takes
  the caller's SparkSession.
- :mod:`.model_cache`: each Python worker's LRU of loaded models, keyed by content hash and
  device.
- :mod:`.runtime`: TensorFlow threads sized to the task's cores; each task's device (its own
  GPU, or the CPU), chosen per task.
- :mod:`.runtimes`: a loaded Keras model run by TensorFlow, OpenVINO or LiteRT behind one
  ``predict(batch)`` (``runtime`` / ``precision`` params).
- :mod:`.codec`: Arrow <-> numpy, once: image structs (one mode table, one channel-order
  conversion), file bytes/URIs, numeric list columns -> tensors; rows grouped by shape;
  outputs -> list columns or image structs.
- :mod:`.image_udf`: named models on images (structs, bytes or URIs): resize, preprocess,
  predict in one Arrow UDF per stage.
- :mod:`.image_file_udf`: models fed by user code per image (``imageLoader``,
  ``preprocessor``), with the row's failure reason; the estimator's loader UDF.
- :mod:`.tensor_udf`: Keras models on numeric array columns.
- :mod:`.savedmodel`: TensorFlow SavedModel signatures on numeric or image columns.

What a bad row becomes is decided in :mod:`sparkdl.utils.rows`.

Below the engine: :mod:`sparkdl.utils.worker` (chunking, heap freezing, task resources),
:mod:`sparkdl.image` (decoding rule, image struct), :mod:`sparkdl.models`, :mod:`sparkdl.graph`
and :mod:`sparkdl.param`, which never import it.
"""
