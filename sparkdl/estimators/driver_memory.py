"""How much driver memory ``fitMultiple`` needs: every trained model returns to the driver as a
Spark task result (its ``.keras`` bytes), and all param maps train at once."""
import logging
import re

__all__ = ["sizeInBytes", "checkDriverMemory"]

logger = logging.getLogger(__name__)

_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def sizeInBytes(value, defaultUnit="b"):
    """A Spark size string (``"1g"``, ``"512m"``, ``"2048k"``, ``"1gb"``) in bytes; a bare
    number is in ``defaultUnit`` (``"m"`` for ``spark.driver.memory``, bytes for
    ``spark.driver.maxResultSize``)."""
    match = re.fullmatch(r"\s*(\d+)\s*([bkmgtp]?)b?\s*", str(value).lower())
    if not match:
        raise ValueError(f"not a Spark size: {value!r}")
    return int(match.group(1)) * _UNITS[match.group(2) or defaultUnit]


def checkDriverMemory(spark, modelSize, modelsAtOnce):
    """Log a warning when ``modelSize x modelsAtOnce`` bytes of trained models, returned to the
    driver together, exceed half of ``spark.driver.memory`` (the driver's heap) or of
    ``spark.driver.maxResultSize``. Returns the warning's text, or None.

    :param spark: the SparkSession (its conf is read; works on Spark Connect too).
    :param modelSize: bytes of one trained model (``.keras``).
    :param modelsAtOnce: models trained and returned at once (the param maps of one
        ``fitMultiple``).
    """
    need = int(modelSize) * int(modelsAtOnce)
    limits = []
    for key, default, unit in (("spark.driver.memory", "1g", "m"),
                               ("spark.driver.maxResultSize", "1g", "b")):
        try:
            limit = sizeInBytes(spark.conf.get(key, default) or default, unit)
        except ValueError:
            continue
        if limit > 0 and need > limit / 2:  # maxResultSize 0 means unlimited
            limits.append(f"{key}={limit / (1 << 20):.0f} MiB")
    if not limits:
        return None
    message = (f"KerasImageFileEstimator returns {modelsAtOnce} trained model(s) of "
               f"{modelSize / (1 << 20):.0f} MiB to the driver at once "
               f"({need / (1 << 20):.0f} MiB), more than half of {' and '.join(limits)}; "
               "raise them before the driver starts (e.g. spark-submit --driver-memory 4g "
               "--conf spark.driver.maxResultSize=2g) or train fewer param maps at once")
    logger.warning(message)
    return message
