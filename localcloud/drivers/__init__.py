"""Drivers of the deployed use cases: each starts what a client or AWS would start and returns what happened.

The end-to-end tests and the demo share them, so what the demo prints is what the tests assert.
"""
