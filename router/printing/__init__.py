"""Printing to DICOM printers (Basic Grayscale Print Management Meta SOP Class as SCU, docs/print.md).

``film.py`` lays out films (image boxes and their sizes in pixels), ``pixels.py`` makes an image printable,
``bundle.py`` is the payload of a print job, ``session.py`` talks to the printer.
"""
