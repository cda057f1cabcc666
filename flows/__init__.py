"""careloop.flows."""
