"""careloop.web."""
