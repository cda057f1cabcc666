"""Inbound adapters: what hospital systems send, turned into the events ``flows.ingest`` takes."""
