"""Logging for the router's processes: the serving process and its forward process log alike."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("pynetdicom", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pynetdicom's standard event handlers describe every PDU and DIMSE message for INFO and DEBUG lines that the
    # WARNING level above then drops: about 6 % of the DUL thread's time per small C-STORE. Do not bind them.
    from router._pynetdicom import quiet_event_logging

    quiet_event_logging()
