"""Intake: an inbound object (DICOM, HL7, MPPS) from bytes to durable: envelope, rules, stages, store, jobs."""
