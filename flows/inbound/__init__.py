"""Inbound adapters: HIS database views polled on the ticker, patient lists imported from files."""
