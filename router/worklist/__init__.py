"""The Modality Worklist: items made from HL7 orders, served by a C-FIND SCP (PS3.4 K.6)."""
