"""The image inference UDF: image structs, file bytes or URIs in, model outputs out, in one
Arrow UDF.

Per chunk of ``batchSize`` rows: :func:`sparkdl.engine.codec.imagesToTensor` views the
structs' pixels in the Arrow buffers (or decodes the files), converts them to RGB, resizes
and stacks them into one float32 tensor; it is preprocessed and predicted on; the output goes
back as an Arrow list array built from the prediction tensor
(:func:`sparkdl.engine.codec.listColumn`). Null and invalid images give null outputs, never a
failed task; with ``withErrors=True`` the UDF also gives each bad row's reason
(:mod:`sparkdl.utils.rows`).
"""
from typing import Iterator

import numpy as np
import pyarrow as pa

__all__ = ["imageModelUdf", "resolve"]


def imageModelUdf(handle, inputSize, preprocess=None, resizeMethod="bilinear", batchSize=64,
                  returnType="array<float>", postprocess=None, withErrors=False):
    """Build the Arrow UDF ``image -> model output`` for one stage.

    :param handle: :class:`sparkdl.engine.shipping.Handle` of the Keras model.
    :param inputSize: ``(height, width)`` images are resized to.
    :param preprocess: dotted path of a function applied to the RGB float32 batch (e.g.
        ``"keras.applications.resnet50.preprocess_input"``), or None.
    :param resizeMethod: Pillow filter name.
    :param batchSize: rows per ``predict`` call; also bounds the task's memory.
    :param returnType: Spark type of the result; ``array<float>`` unless ``postprocess``.
    :param postprocess: ``f(predictions, validRows, n) -> pa.Array`` for other outputs.
    :param withErrors: return ``struct<output: returnType, error: string>``, ``error`` the
        reason of each row that is not null but gives a null output (e.g. "malformed image
        struct: ...", "cannot read file: ...", "empty file").
    """
    from pyspark.sql.functions import arrow_udf

    if withErrors:
        returnType = f"struct<output:{returnType},error:string>"

    @arrow_udf(returnType)
    def predictImages(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        from sparkdl.engine.codec import imagesToTensor, listColumn
        from sparkdl.engine.image_udf import resolve
        from sparkdl.utils.rows import RowErrors
        from sparkdl.utils.worker import iterChunks

        model = handle.load()
        prep = resolve(preprocess)
        buffer = np.empty((batchSize,) + tuple(inputSize) + (3,), np.float32)
        for chunk in iterChunks(batches, batchSize):
            errors = RowErrors(len(chunk))
            tensor, validRows = imagesToTensor(chunk, inputSize, resizeMethod, errors, buffer)
            out = np.zeros((0, 0), np.float32)
            if len(validRows):
                out = model.predict(prep(tensor) if prep else tensor)
                out = np.asarray(out, np.float32).reshape(len(validRows), -1)
            if postprocess is None:
                output = listColumn([(validRows, out)] if len(validRows) else [], len(chunk))
            else:
                output = postprocess(out, validRows, len(chunk))
            if withErrors:
                yield pa.StructArray.from_arrays([output, errors.toArrow()],
                                                 names=["output", "error"])
            else:
                yield output

    return predictImages


def resolve(dottedPath):
    """Import ``"package.module.name"`` and return ``name`` (None for None)."""
    if dottedPath is None:
        return None
    import importlib

    module, _, name = dottedPath.rpartition(".")
    return getattr(importlib.import_module(module), name)
