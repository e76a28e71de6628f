"""AWS adapters of the throttling cores: injected typed clients, `ClientError` translated at the edge."""
