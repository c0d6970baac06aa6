"""Inbound listeners: DIMSE, MLLP and HTTP."""
