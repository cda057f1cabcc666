"""Inbound adapters: messages from hospital systems turned into the events ``flows.ingest`` takes."""
