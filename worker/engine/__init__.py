"""Texts -> probabilities -> label sets. Knows nothing of Kafka.

Import `worker.engine.engine.Engine` for the model; `worker.engine.result` holds plain result types.
"""
