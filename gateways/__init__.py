"""Gateways that push events to clients."""
