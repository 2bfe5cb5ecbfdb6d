"""What the tests and benchmarks share and the runtime package never ships: models they build
(random-weight encoders and heads, exported through the project's own code) and black-box Kafka
helpers (a real broker, the worker as a real process)."""
