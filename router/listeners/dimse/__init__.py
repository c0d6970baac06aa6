"""The DICOM listener (DIMSE): C-ECHO, C-STORE, Q/R, worklist, storage commitment and MPPS SCPs."""
