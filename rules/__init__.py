"""careloop.rules."""
