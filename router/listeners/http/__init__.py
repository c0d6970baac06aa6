"""HTTP: DICOMweb (STOW-RS, QIDO-RS, WADO-RS) served by Starlette under uvicorn."""
