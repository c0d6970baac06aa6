"""Destinations: how a batch of outbox jobs is delivered to one peer (DICOM, DIMSE-N, MLLP, STOW-RS ...)."""
