"""TensorFlow graphs as sparkdl inputs: :class:`sparkdl.graph.input.TFInputGraph`."""
