"""The index, outbox and workflow tables as SQLAlchemy Core ``Table`` objects, for Core statements.

The SQLModel classes in ``router.store.models`` define them; their ``__table__`` is untyped, so every Core statement
takes its table from here instead.
"""

from __future__ import annotations

from sqlalchemy import Table
from sqlmodel import SQLModel

from router.store import models, ops_models

_TABLES = SQLModel.metadata.tables


def _table(model: type[SQLModel]) -> Table:
    return _TABLES[str(model.__tablename__)]


PATIENT = _table(models.Patient)
STUDY = _table(models.Study)
SERIES = _table(models.Series)
SERIES_REQUEST = _table(models.SeriesRequest)
INSTANCE = _table(models.Instance)
JOB = _table(models.Job)
PATIENT_IDENTIFIER = _table(models.PatientIdentifier)
PATIENT_DETAILS = _table(models.PatientDetails)
WORKLIST_ITEM = _table(models.WorklistItem)
HL7_LOG = _table(models.Hl7Log)
COMMIT_TRANSACTION = _table(models.CommitTransaction)
COMMIT_ITEM = _table(models.CommitItem)
PERFORMED_PROCEDURE_STEP = _table(models.PerformedProcedureStep)
PATIENT_USE = _table(models.PatientUse)
REMOVED_FILE = _table(models.RemovedFile)
USER = _table(ops_models.User)
API_TOKEN = _table(ops_models.ApiToken)
WEB_SESSION = _table(ops_models.WebSession)
PEER_STATE = _table(ops_models.PeerState)
RULE_VERSION = _table(ops_models.RuleVersion)
ACTIVITY = _table(ops_models.Activity)
NODE = _table(ops_models.Node)
RULE_SET = _table(ops_models.RuleSet)
