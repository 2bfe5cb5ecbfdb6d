"""emotion-stream-worker: tag Kafka chat streams with GoEmotions labels on CPUs."""

__version__ = "0.1.0"
