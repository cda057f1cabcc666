"""careloop.forms."""
