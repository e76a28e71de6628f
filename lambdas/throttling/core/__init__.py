"""Stdlib-only throttling cores: pure decisions with the time passed in, no I/O and no AWS SDK."""
