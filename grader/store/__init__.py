"""Persistence: the schema, its migrations, and the functions that read and write it."""

from grader.store.database import Database, DatabaseError, open_database
from grader.store.models import Batch, Blob, CallbackDelivery, Result, Submission

__all__ = ["Batch", "Blob", "CallbackDelivery", "Database", "DatabaseError", "Result", "Submission", "open_database"]
