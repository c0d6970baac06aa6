"""DICOM media: reading a file-set (``router import``) and writing one (``router export``), PS3.10 and PS3.12.

``source`` opens what was given (a folder, a DICOMDIR file, a .zip) read-only; ``fileset`` reads its DICOMDIR, damage
and all; ``selection`` picks what to import and lists the patient/study/series tree; ``charsets`` checks each
object's text against its Specific Character Set and corrects it when told which set to assume; ``importer`` takes
each object through the router's own intake (or, with ``--to``, ``direct`` sends it to a peer); ``report`` holds
each object's outcome; ``export`` writes a General Purpose file-set of stored studies. docs/media.md.
"""
