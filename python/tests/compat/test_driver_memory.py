"""The estimator's driver-memory warning: trained models come back to the driver together."""
import logging

import pytest

from sparkdl.estimators.driver_memory import checkDriverMemory, sizeInBytes


def test_spark_sizes():
    assert sizeInBytes("1g") == 1 << 30 and sizeInBytes("512m") == 512 << 20
    assert sizeInBytes("2048", "m") == 2 << 30 and sizeInBytes("1024") == 1024
    assert sizeInBytes("4gb") == 4 << 30 and sizeInBytes(" 16K ") == 16 << 10
    with pytest.raises(ValueError, match="not a Spark size"):
        sizeInBytes("lots")


def test_warns_when_models_at_once_approach_the_driver_limits(spark, caplog):
    # the test session keeps Spark's defaults: 1g heap, 1g maxResultSize
    assert spark.conf.get("spark.driver.maxResultSize", "1g") == "1g"
    inception = 92 << 20  # InceptionV3 as .keras bytes
    with caplog.at_level(logging.WARNING, logger="sparkdl.estimators"):
        message = checkDriverMemory(spark, inception, 8)
    assert "8 trained model(s) of 92 MiB to the driver at once (736 MiB)" in message
    assert "spark.driver.memory=1024 MiB and spark.driver.maxResultSize=1024 MiB" in message
    assert message in caplog.text
    assert checkDriverMemory(spark, inception, 2) is None
    assert checkDriverMemory(spark, 1 << 20, 64) is None
