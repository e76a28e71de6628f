"""Pieces that orchestrate the cores and the adapters inside a Lambda function."""
