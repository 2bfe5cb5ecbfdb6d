"""emotion-stream-worker: tag Kafka chat streams with GoEmotions labels on CPUs."""

import os

# onnxruntime (1.29+) sends usage telemetry from Linux too, and writes a device id under $HOME
# (a warning on a read-only root filesystem). Off unless the user set it otherwise.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
