"""Development tools: the embedded local broker and the demo (not needed by a deployed worker)."""
