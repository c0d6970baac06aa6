"""DICOMweb (PS3.18) over HTTP: STOW-RS, QIDO-RS, WADO-RS, served by Starlette under uvicorn."""
