"""sparkdl's Spark ML stages."""
