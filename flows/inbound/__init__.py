"""Inbound adapters: what other hospital systems send, turned into Careloop domain events."""
