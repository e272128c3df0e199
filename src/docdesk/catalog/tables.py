"""The catalog's tables. Migrations in ``migrations/`` create exactly these."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "BLOB_COLUMNS",
    "BlobColumn",
    "callbacks",
    "captures",
    "deliveries",
    "documents",
    "keys",
    "metadata",
    "recoveries",
    "versions",
]

metadata = MetaData()

documents = Table(
    "documents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("title", String(255), nullable=False),
    Column("file_type", String(16), nullable=False),
    # The version that opens in the editor; moves only inside a commit.
    Column("current_version", Integer, nullable=False),
    # The key issued for the current version; callbacks may still bring
    # older keys of the same document, listed in `keys`.
    Column("key", String(128), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "document_id",
        String(32),
        ForeignKey("documents.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("number", Integer, nullable=False),
    Column("blob", String(255), nullable=False),
    Column("file_type", String(16), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("author_id", String(255)),
    Column("author_name", String(255)),
    # upload, new, save, forcesave, restore, recovery
    Column("source", String(16), nullable=False),
    Column("status", Integer),
    Column("forcesave_type", Integer),
    # The key the Document Server edited under when it produced this file.
    Column("key", String(128)),
    Column("history", JSON),
    Column("changes_blob", String(255)),
    Column("forms_blob", String(255)),
    Column("restored_from", Integer),
    Column("note", Text),
    UniqueConstraint("document_id", "number", name="uq_versions_document_number"),
)

keys = Table(
    "keys",
    metadata,
    Column("key", String(128), primary_key=True),
    Column(
        "document_id",
        String(32),
        ForeignKey("documents.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    # The version the document URL serves under this key.
    Column("version", Integer, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("retired", DateTime(timezone=True)),
    # Who edits under this key now, from the last status-1 callback.
    Column("editors", JSON, nullable=False, default=list),
    # When the callback that set `editors` was signed (its iat): status 1
    # and 4 may arrive late and out of order.
    Column("editors_signed", Integer),
)

callbacks = Table(
    "callbacks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received", DateTime(timezone=True), nullable=False),
    Column("document_id", String(32)),
    Column("key", String(128)),
    Column("status", Integer),
    Column("outcome", String(32), nullable=False),
    Column("detail", Text),
    Column("version", Integer),
    Column("http_status", Integer, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("source", String(64)),
    Index("ix_callbacks_document_received", "document_id", "received"),
    # Retention deletes by age alone.
    Index("ix_callbacks_received", "received"),
)

recoveries = Table(
    "recoveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("document_id", String(32), nullable=False, index=True),
    Column("key", String(128), nullable=False),
    Column("status", Integer, nullable=False),
    Column("blob", String(255), nullable=False),
    Column("file_type", String(16), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("reason", Text, nullable=False),
    Column("restored_version", Integer),
)

# Fingerprints of callback tokens already acted on: a replayed callback is
# answered as done without doing anything twice. Kept until the token
# expires, after which the Document Server could not have sent it.
deliveries = Table(
    "deliveries",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("document_id", String(32), nullable=False),
    Column("status", Integer, nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False, index=True),
)

# Force saves docdesk asked for, each known by the userdata it sent. The
# status-6 callback that carries the userdata resolves it, on whichever
# instance it lands; the instance that asked watches the row.
captures = Table(
    "captures",
    metadata,
    Column("token", String(64), primary_key=True),
    Column("document_id", String(32), nullable=False, index=True),
    Column("key", String(128), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("resolved", DateTime(timezone=True)),
    # saved, unchanged, failed, timeout
    Column("outcome", String(32)),
    Column("version", Integer),
)


@dataclass(frozen=True)
class BlobColumn:
    """A column whose value names a blob, and what the row records about it."""

    name: str
    sha256: str | None = None
    size: str | None = None


# Which columns of each table name blobs. Every table of the metadata must be
# listed, with () when none of its columns does: the transfer copies these
# blobs with their rows, and the orphan sweep keeps exactly these blobs, so a
# table missing here stops both rather than losing its blobs.
BLOB_COLUMNS: Mapping[str, tuple[BlobColumn, ...]] = {
    "documents": (),
    "versions": (
        BlobColumn("blob", sha256="sha256", size="size"),
        BlobColumn("changes_blob"),
        BlobColumn("forms_blob"),
    ),
    "keys": (),
    "callbacks": (),
    "recoveries": (BlobColumn("blob", sha256="sha256", size="size"),),
    "deliveries": (),
    "captures": (),
}
