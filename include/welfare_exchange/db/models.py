"""SQLAlchemy 2 models of the project database.

Four parts, each used by its own module:

* the **protocol registry** (:class:`Protocol`, :class:`ProtocolTransition`) —
  :mod:`welfare_exchange.protocols`;
* the **entitlement store** (:class:`Child`, :class:`Beneficiary`, :class:`Entitlement`) —
  :mod:`welfare_exchange.entitlements`;
* the **exchange ledger** (:class:`Exchange`, :class:`SideEffect`, :class:`RetentionItem`) —
  :mod:`welfare_exchange.ledger`;
* the **audit trail** (:class:`AuditRecord`, :class:`AuditSubject`, :class:`AuditHead`,
  :class:`AuditAnchor`, :class:`AuditPrunePermit`) — :mod:`welfare_exchange.audit`;
* the **referral ledger** (:class:`ReferralCandidate`, :class:`Referral`, :class:`ReferralFeedback`) —
  :mod:`welfare_exchange.referral`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

DEFAULT_REFERENCE_DATE = dt.date(2020, 3, 1)

#: The supplements of the Groeipakket: what the entitlement store holds and a protocol may name.
SUPPLEMENTS = ("sociale_toeslag", "zorgtoeslag", "schooltoeslag")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: sa.JSON, list[str]: sa.JSON}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --------------------------------------------------------------------------- protocol registry


class Protocol(Base):
    """A *protocol tot gegevensuitwisseling*: the legal agreement that must exist before data flows.

    It fixes the parties, legal basis, purpose (*doelbinding*), the fields allowed in a result,
    the channel, the key agreed between the two DPOs (held in an Airflow connection, never here),
    retention and validity.
    """

    __tablename__ = "protocol"

    id: Mapped[int] = mapped_column(primary_key=True)
    nis_code: Mapped[str] = mapped_column(sa.String(5), index=True)
    municipality: Mapped[str] = mapped_column(sa.String(120))
    kind: Mapped[str] = mapped_column(sa.String(20))  # method1 | method2 | structural | referral
    legal_basis: Mapped[str] = mapped_column(sa.Text)
    purpose: Mapped[str] = mapped_column(sa.Text)
    college_decision_ref: Mapped[str | None] = mapped_column(sa.String(200))
    college_decision_date: Mapped[dt.date | None]
    dpo_advice_date: Mapped[dt.date | None]
    signature_date: Mapped[dt.date | None]
    valid_from: Mapped[dt.date | None]
    valid_until: Mapped[dt.date | None]
    channel: Mapped[str] = mapped_column(sa.String(10))  # sftp | smime
    channel_connection: Mapped[str] = mapped_column(sa.String(250))
    key_connection: Mapped[str] = mapped_column(sa.String(250))
    sender_address: Mapped[str | None] = mapped_column(sa.String(250))
    #: S/MIME: the municipality's pinned certificates (PEM), and whether its messages must be signed.
    sender_certificates: Mapped[list[str] | None] = mapped_column(sa.JSON)
    require_signature: Mapped[bool] = mapped_column(default=False)
    allowed_fields: Mapped[list[str]]
    reference_date: Mapped[dt.date] = mapped_column(default=DEFAULT_REFERENCE_DATE)
    supplements: Mapped[list[str]]
    age_min: Mapped[int] = mapped_column(default=0)
    age_max: Mapped[int] = mapped_column(default=25)
    request_retention_days: Mapped[int] = mapped_column(default=30)
    result_retention_days: Mapped[int] = mapped_column(default=90)
    delete_request_after_match: Mapped[bool] = mapped_column(default=False)
    schedule: Mapped[str | None] = mapped_column(sa.String(100))
    offer: Mapped[dict[str, Any] | None]
    #: Referral protocols: the *samenwerkingsovereenkomst* (cooperation agreement) with the Sociaal
    #: Huis, the professional-secrecy conditions it sets (a reference to its text), and consent.
    agreement_ref: Mapped[str | None] = mapped_column(sa.String(200))
    agreement_date: Mapped[dt.date | None]
    secrecy_conditions: Mapped[str | None] = mapped_column(sa.Text)
    consent_required: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(sa.String(20), default="draft", index=True)
    status_changed_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)

    transitions: Mapped[list[ProtocolTransition]] = relationship(
        back_populates="protocol", order_by="ProtocolTransition.id"
    )


class ProtocolTransition(Base):
    """One status change of a protocol, with who did it and why."""

    __tablename__ = "protocol_transition"

    id: Mapped[int] = mapped_column(primary_key=True)
    protocol_id: Mapped[int] = mapped_column(sa.ForeignKey("protocol.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(sa.String(20))
    to_status: Mapped[str] = mapped_column(sa.String(20))
    at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
    actor: Mapped[str] = mapped_column(sa.String(200))
    reason: Mapped[str | None] = mapped_column(sa.Text)

    protocol: Mapped[Protocol] = relationship(back_populates="transitions")


# --------------------------------------------------------------------------- entitlement store


class Child(Base):
    """A *rechtgevend kind*: the child that gives right to Groeipakket supplements."""

    __tablename__ = "child"

    id: Mapped[int] = mapped_column(primary_key=True)
    insz: Mapped[str] = mapped_column(sa.String(11), unique=True)
    birth_date: Mapped[dt.date]
    nis_code: Mapped[str] = mapped_column(sa.String(5), index=True)


class Beneficiary(Base):
    """A *begunstigde*: the parent or carer to whom the supplement is paid."""

    __tablename__ = "beneficiary"

    id: Mapped[int] = mapped_column(primary_key=True)
    insz: Mapped[str] = mapped_column(sa.String(11), unique=True)
    email: Mapped[str | None] = mapped_column(sa.String(250))
    address_line: Mapped[str | None] = mapped_column(sa.String(250))
    postcode: Mapped[str | None] = mapped_column(sa.String(10))
    city: Mapped[str | None] = mapped_column(sa.String(120))


class Entitlement(Base):
    """One version of a period during which a child gave right to a supplement paid to a beneficiary.

    ``supplement`` is ``sociale_toeslag`` (the social supplement, the child-poverty criterion),
    ``zorgtoeslag`` or ``schooltoeslag``; ``start_date``..``end_date`` is the valid period
    (inclusive; ``end_date`` ``None`` means ongoing).

    Bitemporal: ``recorded_from`` is when the store learnt this version (the import that brought
    it), ``recorded_to`` when a later import superseded or withdrew it (``None``: still current).
    Rows are never updated otherwise nor deleted, so what the agency knew at any moment can be
    read back (:mod:`welfare_exchange.entitlements.history`). An entitlement is identified by
    (child, beneficiary, supplement, start date): at most one *current* version each.
    """

    __tablename__ = "entitlement"
    __table_args__ = (
        sa.Index(
            "uq_entitlement_current", "child_id", "beneficiary_id", "supplement", "start_date", unique=True,
            sqlite_where=sa.text("recorded_to IS NULL"), postgresql_where=sa.text("recorded_to IS NULL"),
        ),
        # The match joins requested children on (child_id, supplement) and filters on dates.
        sa.Index("ix_entitlement_child_supplement", "child_id", "supplement", "start_date"),
        sa.Index("ix_entitlement_supplement_dates", "supplement", "start_date", "end_date"),
        # The feeds find what was recorded (or superseded) during an interval.
        sa.Index("ix_entitlement_recorded_from", "recorded_from"),
        sa.Index("ix_entitlement_recorded_to", "recorded_to"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    child_id: Mapped[int] = mapped_column(sa.ForeignKey("child.id"))
    beneficiary_id: Mapped[int] = mapped_column(sa.ForeignKey("beneficiary.id"), index=True)
    supplement: Mapped[str] = mapped_column(sa.String(20))
    start_date: Mapped[dt.date]
    end_date: Mapped[dt.date | None]
    recorded_from: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
    recorded_to: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))


# --------------------------------------------------------------------------- exchange ledger


class Exchange(Base):
    """One exchange: one request file (or one feed interval) under one protocol.

    Unique on (protocol, request hash): the same file sent twice is recognised as a duplicate.
    """

    __tablename__ = "exchange"
    __table_args__ = (sa.UniqueConstraint("protocol_id", "request_sha256", name="uq_exchange_request"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    protocol_id: Mapped[int] = mapped_column(sa.ForeignKey("protocol.id"), index=True)
    request_sha256: Mapped[str] = mapped_column(sa.String(64))
    request_name: Mapped[str | None] = mapped_column(sa.String(250))
    request_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    state: Mapped[str] = mapped_column(sa.String(20), default="received", index=True)
    #: The furthest state on the forward path it reached (kept while it is ``failed``, so that a
    #: recovery resumes there); see :mod:`welfare_exchange.exchange_state`.
    progress: Mapped[str | None] = mapped_column(sa.String(20))
    failure_code: Mapped[str | None] = mapped_column(sa.String(50))
    dag_id: Mapped[str | None] = mapped_column(sa.String(250))
    run_id: Mapped[str | None] = mapped_column(sa.String(250))
    exchange_date: Mapped[dt.date | None]
    counts: Mapped[dict[str, Any] | None]
    result_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow, onupdate=_utcnow)


class SideEffect(Base):
    """A side effect done once: delivered, message sent, file deleted, …

    ``idempotency_key`` is unique: a task asks for it before acting and records it after.
    """

    __tablename__ = "side_effect"

    id: Mapped[int] = mapped_column(primary_key=True)
    exchange_id: Mapped[int | None] = mapped_column(sa.ForeignKey("exchange.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(30))
    idempotency_key: Mapped[str] = mapped_column(sa.String(250), unique=True)
    state: Mapped[str] = mapped_column(sa.String(10), default="pending")  # pending | done
    target: Mapped[str | None] = mapped_column(sa.String(500))
    sha256: Mapped[str | None] = mapped_column(sa.String(64))
    detail: Mapped[dict[str, Any] | None]
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
    done_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))


class RetentionItem(Base):
    """Something that must be deleted when its retention ends: a file, a staging folder, rows.

    One item per exchange's copy: a later exchange whose copy lands at the same location (a
    municipality reusing a file name) gets its own item.
    """

    __tablename__ = "retention_item"
    __table_args__ = (sa.UniqueConstraint("kind", "location", "exchange_id", name="uq_retention_copy"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    exchange_id: Mapped[int | None] = mapped_column(sa.ForeignKey("exchange.id"), index=True)
    protocol_id: Mapped[int] = mapped_column(sa.ForeignKey("protocol.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(30))  # request_file | result_file | staging | quarantine | report
    where: Mapped[str] = mapped_column(sa.String(10))  # sftp | imap | local | db
    #: Where the copy was put; internal (it may hold a municipality's file name): never shown as is.
    location: Mapped[str] = mapped_column(sa.String(500))
    #: SHA-256 of the copy's content, recorded when it was made: what identifies it before deletion.
    sha256: Mapped[str | None] = mapped_column(sa.String(64))
    size: Mapped[int | None] = mapped_column(sa.BigInteger)
    #: For a message in the agency's mailbox: where the server said it put it (COPYUID), a hint only.
    uidvalidity: Mapped[int | None] = mapped_column(sa.BigInteger)
    uid: Mapped[int | None] = mapped_column(sa.BigInteger)
    #: The run date on which the copy was first not found (reported as missing, never certified).
    missing_since: Mapped[dt.date | None]
    rule: Mapped[str] = mapped_column(sa.String(100))
    deadline: Mapped[dt.date] = mapped_column(index=True)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    deletion_outcome: Mapped[str | None] = mapped_column(sa.String(30))


class StagedBlob(Base):
    """A staged file of an exchange, kept in the project database (the ``postgres`` staging back end).

    Every worker host reaches the database, so a step may run on any of them. ``content`` is
    always sealed with the staging key (Fernet): never plaintext, whatever the file.
    """

    __tablename__ = "staged_blob"
    __table_args__ = (sa.UniqueConstraint("exchange_id", "name", name="uq_staged_blob"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    protocol_id: Mapped[int] = mapped_column(index=True)
    exchange_id: Mapped[int] = mapped_column(index=True)
    #: The staged file's name in its exchange (``valid.fernet``, ``result.xlsx``): the agency's own names.
    name: Mapped[str] = mapped_column(sa.String(200))
    content: Mapped[bytes] = mapped_column(sa.LargeBinary)
    #: Size of the sealed content, for listings and certificates.
    size: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True))


# --------------------------------------------------------------------------- audit trail


class AuditRecord(Base):
    """One fact of the processing register, append-only and hash-chained.

    Fields follow the MAGDA audit register: who (actor), what (action, outcome), about whom
    (a keyed HMAC subject reference, never the INSZ), why (protocol, legal basis), when, with
    file hashes and counts. ``record_hash`` is the SHA-256 of the record's canonical encoding,
    which includes ``prev_hash`` — the ``record_hash`` of the record before it.
    """

    __tablename__ = "audit_record"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    recorded_at: Mapped[str] = mapped_column(sa.String(40))
    actor_type: Mapped[str] = mapped_column(sa.String(10))  # system | user
    actor: Mapped[str] = mapped_column(sa.String(200))
    dag_id: Mapped[str | None] = mapped_column(sa.String(250))
    run_id: Mapped[str | None] = mapped_column(sa.String(250))
    task_id: Mapped[str | None] = mapped_column(sa.String(250))
    try_number: Mapped[int | None]
    action: Mapped[str] = mapped_column(sa.String(60), index=True)
    outcome: Mapped[str] = mapped_column(sa.String(20))
    protocol_id: Mapped[int | None] = mapped_column(index=True)
    legal_basis: Mapped[str | None] = mapped_column(sa.Text)
    exchange_id: Mapped[int | None] = mapped_column(index=True)
    data_categories: Mapped[list[str] | None] = mapped_column(sa.JSON)
    file_hashes: Mapped[dict[str, Any] | None]
    counts: Mapped[dict[str, Any] | None]
    subject_ref: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    subjects_count: Mapped[int | None]
    subjects_digest: Mapped[str | None] = mapped_column(sa.String(64))
    message: Mapped[str | None] = mapped_column(sa.Text)
    fact_key: Mapped[str | None] = mapped_column(sa.String(250), unique=True)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    record_hash: Mapped[str] = mapped_column(sa.String(64))


class AuditSubject(Base):
    """The keyed-HMAC references of every person a record is about (an exchange has many).

    Their sorted digest is part of the record's hash, so they are covered by the chain. Keyed by
    the raw 32-byte reference first (``WITHOUT ROWID`` on SQLite): the table is its own index,
    for subject-access lookups and for ``audit verify``'s single pass (migration 0004).
    """

    __tablename__ = "audit_subject"
    __table_args__ = (
        sa.PrimaryKeyConstraint("subject_ref", "audit_id", name="pk_audit_subject_ref"),
        {"sqlite_with_rowid": False},
    )

    subject_ref: Mapped[bytes] = mapped_column(sa.LargeBinary(32))
    audit_id: Mapped[int] = mapped_column(sa.ForeignKey("audit_record.id", name="fk_audit_subject_ref_audit_id"))


class AuditHead(Base):
    """The chain's current head (one row): detects records cut off the end of the trail."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    last_id: Mapped[int]
    last_hash: Mapped[str] = mapped_column(sa.String(64))


class AuditAnchor(Base):
    """Where pruning cut the trail (an index only): the chained ``audit.pruned`` fact is the evidence;
    ``audit verify`` names a row that no such fact backs as a forged pruning marker."""

    __tablename__ = "audit_anchor"

    id: Mapped[int] = mapped_column(primary_key=True)
    through_id: Mapped[int]
    head_hash: Mapped[str] = mapped_column(sa.String(64))
    pruned_at: Mapped[str] = mapped_column(sa.String(40))
    records_pruned: Mapped[int]


class AuditPrunePermit(Base):
    """Present only inside a pruning transaction: the guard lets those deletions through."""

    __tablename__ = "audit_prune_permit"

    id: Mapped[int] = mapped_column(primary_key=True)
    through_id: Mapped[int]


# --------------------------------------------------------------------------- referral ledger


class ReferralCandidate(Base):
    """A family Kind en Gezin proposes for referral to its Sociaal Huis (a child born in *kansarmoede*).

    Minimal by design: the child only as a keyed reference (``family_ref``, the audit's HMAC of its
    INSZ), its birth month, domicile, the criteria flagged (never the scores' notes) and the consent
    dates; the parent's contact details sealed with the staging key (``contact_sealed``), opened only
    to build a referral list.
    """

    __tablename__ = "referral_candidate"
    __table_args__ = (
        sa.UniqueConstraint("family_ref", name="uq_referral_candidate_family"),
        sa.Index("ix_referral_candidate_selection", "nis_code", "criteria_count"),
        sa.Index("ix_referral_candidate_parent_ref", "parent_ref"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    family_ref: Mapped[bytes] = mapped_column(sa.LargeBinary(32))
    parent_ref: Mapped[bytes | None] = mapped_column(sa.LargeBinary(32))
    birth_month: Mapped[str] = mapped_column(sa.String(7))  # YYYY-MM
    nis_code: Mapped[str] = mapped_column(sa.String(5))
    criteria: Mapped[list[str]]
    criteria_count: Mapped[int]
    contact_sealed: Mapped[bytes] = mapped_column(sa.LargeBinary)
    consent_given_on: Mapped[dt.date | None]
    consent_withdrawn_on: Mapped[dt.date | None]
    source_sha256: Mapped[str] = mapped_column(sa.String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow, onupdate=_utcnow)


class Referral(Base):
    """One family referred under one agreement: unique on (protocol, family) — exactly once.

    ``code`` is the opaque referral id the Sociaal Huis quotes in its feedback. ``exchange_id`` is
    the referral list the family is in; ``sent_at`` is set for the whole list in the transaction
    that records its delivery. ``notice_exchange_id`` is the withdrawal notice that told the
    Sociaal Huis the family withdrew its consent after the referral was sent.
    """

    __tablename__ = "referral"
    __table_args__ = (
        sa.UniqueConstraint("protocol_id", "family_ref", name="uq_referral_family"),
        sa.UniqueConstraint("code", name="uq_referral_code"),
        sa.Index("ix_referral_exchange_id", "exchange_id"),
        sa.Index("ix_referral_family_ref", "family_ref"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    protocol_id: Mapped[int] = mapped_column(sa.ForeignKey("protocol.id"))
    candidate_id: Mapped[int] = mapped_column(sa.ForeignKey("referral_candidate.id"))
    family_ref: Mapped[bytes] = mapped_column(sa.LargeBinary(32))
    code: Mapped[str] = mapped_column(sa.String(20))
    criteria: Mapped[list[str]]
    exchange_id: Mapped[int] = mapped_column(sa.ForeignKey("exchange.id"))
    listed_on: Mapped[dt.date]
    sent_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    withdrawn_on: Mapped[dt.date | None]
    notice_exchange_id: Mapped[int | None] = mapped_column(sa.ForeignKey("exchange.id"))


class ReferralFeedback(Base):
    """An outcome the Sociaal Huis reported for a referral; unique per (referral, outcome, date)."""

    __tablename__ = "referral_feedback"
    __table_args__ = (
        sa.UniqueConstraint("referral_id", "outcome", "outcome_date", name="uq_referral_feedback"),
        sa.Index("ix_referral_feedback_referral_id", "referral_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    referral_id: Mapped[int] = mapped_column(sa.ForeignKey("referral.id"))
    exchange_id: Mapped[int] = mapped_column(sa.ForeignKey("exchange.id"))
    outcome: Mapped[str] = mapped_column(sa.String(20))
    outcome_date: Mapped[dt.date]
    recorded_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
