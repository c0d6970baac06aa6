"""Query services on the index: DICOM C-FIND matching, query plans, retrieve selection."""
