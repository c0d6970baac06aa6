"""HL7 v2: ER7 parsing (:mod:`.message`), acknowledgements (:mod:`.ack`) and the MLLP transport (:mod:`.mllp`)."""
