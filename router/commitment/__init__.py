"""Storage Commitment Push Model (PS3.4 Annex J), both roles.

- SCP (``scp.py``): a peer asks the router to take responsibility for instances it sent; the router checks each
  is durably stored and reports over the same association or a new one (a durable outbox job).
- SCU (``ledger.py``, ``requester.py``): after forwarding with ``forward: {to: PACS, commit: true}`` the router
  asks the peer for commitment and keeps the transaction in the database until the peer has reported.
"""

from __future__ import annotations

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"  # Storage Commitment Push Model SOP Class
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"  # its well-known SOP Instance
REQUEST_COMMITMENT = 1  # N-ACTION Action Type ID
EVENT_ALL_COMMITTED = 1  # N-EVENT-REPORT Event Type IDs
EVENT_FAILURES = 2
# Failure Reason (0008,1197) values (PS3.4 J.3.3.1.1) are DIMSE statuses: router.statuses
