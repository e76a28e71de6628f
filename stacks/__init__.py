"""The CDK side: one thin stack per layer, reusable constructs in `stacks.patterns`, config in `stacks.config`."""
