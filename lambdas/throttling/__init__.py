"""Shared throttling code of every handler: pure cores (no AWS calls) and thin adapters that take injected clients."""
