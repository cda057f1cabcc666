"""careloop.reports."""
