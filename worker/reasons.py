"""Why a message went to the dead-letter topic: stable, short error classes (a metric label and the
`emotion-worker.error.class` header). Defined here, below both the stream and observe layers."""

from __future__ import annotations

# Decoding rejects a message for one of the first eight; the engine failing on it is the last.
DEAD_LETTER_REASONS = ("null_value", "too_large", "invalid_utf8", "invalid_json", "not_an_object", "missing_text",
                       "text_not_string", "empty_text", "inference_error")
