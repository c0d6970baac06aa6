"""DICOM networking (DIMSE): the SCP that receives and the SCU that forwards."""
