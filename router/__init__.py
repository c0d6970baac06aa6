"""An HL7 + DICOM integration engine: ingest, route by declarative rules, store and forward durably."""

__version__ = "0.1.0"  # the one place: pyproject.toml reads it ([tool.setuptools.dynamic])
