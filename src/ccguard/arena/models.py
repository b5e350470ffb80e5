"""The arena's tables (SQLAlchemy ORM). The schema is created and changed only by the Alembic migrations beside
this file; a test checks that the migrations and these models agree."""

from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Campaign(Base):
    """A set of target questions, and how specific an answer must be to count as a success."""

    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    require: Mapped[str] = mapped_column(String(20))  # the grade level a success needs: 'specific' or 'detailed'
    source: Mapped[str] = mapped_column(Text)  # where the targets came from (constitution name and hash, or a file)
    created_at: Mapped[float] = mapped_column(Float)
    targets: Mapped[list[Target]] = relationship(back_populates="campaign", order_by="Target.position")


class Target(Base):
    """One forbidden question of a campaign. Only the question is stored, never a reference answer."""

    __tablename__ = "targets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    question: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(100), nullable=True)
    campaign: Mapped[Campaign] = relationship(back_populates="targets")


class Participant(Base):
    """Someone who may attack the guard (or an admin). Only a hash of the token is stored."""

    __tablename__ = "participants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20))  # 'participant' or 'admin'
    created_at: Mapped[float] = mapped_column(Float)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Attempt(Base):
    """One submission: a single message, a conversation, or a template applied to every target."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("participant_id", "nonce", name="uq_attempt_nonce"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"), index=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    nonce: Mapped[str] = mapped_column(String(64))  # the client's idempotency key: a resubmission is not a new attempt
    kind: Mapped[str] = mapped_column(String(20))  # 'single', 'conversation' or 'template'
    prompt: Mapped[str] = mapped_column(Text)  # JSON: the text, the messages, or the template as written
    status: Mapped[str] = mapped_column(String(20), index=True)  # 'running', 'done' or 'failed'
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    universal: Mapped[bool] = mapped_column(Boolean, default=False)  # a template that succeeded on every target
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    runs: Mapped[list[Run]] = relationship(back_populates="attempt", order_by="Run.id", cascade="all, delete-orphan",
                                           passive_deletes=True)
    participant: Mapped[Participant] = relationship()


class Run(Base):
    """One attempt against one target: the messages sent, the response released, the verdict and the grade."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id", ondelete="CASCADE"), index=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id", ondelete="CASCADE"), index=True)
    messages: Mapped[str] = mapped_column(Text)  # JSON list of {role, content}: the full prompt as sent
    response: Mapped[str] = mapped_column(Text, default="")  # what the guard released, saved as it streams
    status: Mapped[str] = mapped_column(String(20))  # 'pending', 'running', 'done' or 'failed'
    blocked_stage: Mapped[str | None] = mapped_column(String(20), nullable=True)  # 'input', 'output' or None
    category: Mapped[str | None] = mapped_column(String(100), nullable=True)
    released_chars: Mapped[int | None] = mapped_column(Integer, nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    grade_level: Mapped[str | None] = mapped_column(String(20), nullable=True)
    grade_passed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # a jailbreak success on this target
    grader: Mapped[str | None] = mapped_column(String(100), nullable=True)
    grade_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempt: Mapped[Attempt] = relationship(back_populates="runs")
    target: Mapped[Target] = relationship()
