"""The router as a DICOM SCU: associations it opens (C-STORE, Q/R commands)."""
