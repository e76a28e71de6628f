"""One small module per Lambda handler: parse the event, call the shared package, shape the answer."""
