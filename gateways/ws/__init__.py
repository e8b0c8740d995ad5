"""The WebSocket fan-out gateway."""
