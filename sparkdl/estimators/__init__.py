"""sparkdl's Spark ML Estimators."""
