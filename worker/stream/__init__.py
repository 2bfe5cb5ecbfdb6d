"""Kafka in and out. Knows nothing of ONNX: it hands texts to a classify function."""
