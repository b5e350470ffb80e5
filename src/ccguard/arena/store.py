"""The arena's SQLite store: WAL mode, Alembic migrations, and every write in its own short transaction, so a
server killed mid-attempt leaves each attempt either whole or, after the restart's recovery, marked failed."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from ccguard.arena.campaign import CampaignSpec
from ccguard.arena.models import Attempt, Campaign, Participant, Run, Target
from ccguard.errors import CcguardError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Invite(BaseModel):
    """A new participant and the token that logs them in (shown once; only its hash is stored)."""

    model_config = ConfigDict(frozen=True)
    participant_id: int = Field(description="The participant's id.")
    name: str = Field(description="The participant's name.")
    role: str = Field(description="'participant' or 'admin'.")
    token: str = Field(description="The login token.")


def _pragmas(dbapi_conn: Any, _: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # a committed chunk of a response survives a kill (and a power cut)
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


class Store:
    """All reads and writes of one arena database. Methods are synchronous; the app calls them off the event loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise CcguardError("the arena database must be a file", where=str(self.path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(f"sqlite:///{self.path}", connect_args={"check_same_thread": False})
        event.listen(self.engine, "connect", _pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.migrate()

    def migrate(self) -> None:
        """Bring the schema to the newest migration (a no-op when it is current)."""
        from alembic import command
        from alembic.config import Config
        from sqlalchemy import inspect

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            tables = set(inspect(self.engine).get_table_names())
            if tables and "alembic_version" not in tables:
                raise CcguardError("this SQLite file holds another application's tables; give the arena its own "
                                   "database", where=str(self.path))
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except CcguardError:
            raise
        except Exception as e:  # noqa: BLE001 - a foreign or damaged file: say which, without a traceback
            msg = str(getattr(e, "orig", None) or e).splitlines()[0]
            raise CcguardError(f"not an arena database, or a damaged one: {msg}", where=str(self.path)) from None

    def schema_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()

    # -- participants -------------------------------------------------------------------------------------------
    def invite(self, name: str, role: str = "participant") -> Invite:
        if role not in ("participant", "admin"):
            raise CcguardError(f"role must be 'participant' or 'admin', not {role!r}")
        name = name.strip()
        if not name or len(name) > 100:
            raise CcguardError("a participant's name is 1 to 100 characters")
        token = secrets.token_urlsafe(24)
        try:
            with self.session() as s:
                p = Participant(name=name, token_hash=token_hash(token), role=role, created_at=time.time(), revoked=False)
                s.add(p)
                s.flush()
                pid = p.id
        except IntegrityError:
            raise CcguardError(f"a participant named {name!r} already exists") from None
        return Invite(participant_id=pid, name=name, role=role, token=token)

    def participant_by_token(self, token: str) -> Participant | None:
        if not token or len(token) > 200:
            return None
        with self.session() as s:
            p = s.scalar(select(Participant).where(Participant.token_hash == token_hash(token)))
            return None if p is None or p.revoked else p

    def participants(self) -> list[Participant]:
        with self.session() as s:
            return list(s.scalars(select(Participant).order_by(Participant.id)))

    def has_admin(self) -> bool:
        """Whether an admin who can still log in exists."""
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Participant).where(
                Participant.role == "admin", Participant.revoked.is_(False))) > 0

    def revoke(self, participant_id: int) -> None:
        with self.session() as s:
            p = s.get(Participant, participant_id)
            if p is not None:
                p.revoked = True

    # -- campaigns ----------------------------------------------------------------------------------------------
    def ensure_campaign(self, spec: CampaignSpec) -> int:
        """The campaign's id, creating it on first use. A name already used for other questions is an error."""
        with self.session() as s:
            c = s.scalar(select(Campaign).where(Campaign.name == spec.name).options(selectinload(Campaign.targets)))
            if c is not None:
                if [t.question for t in c.targets] != [t.question for t in spec.targets] or c.require != spec.require:
                    raise CcguardError(f"campaign {spec.name!r} already exists in this database with other targets; "
                                       "give the campaign a new name", where=str(self.path))
                return c.id
            c = Campaign(name=spec.name, require=spec.require, source=spec.source, created_at=time.time())
            c.targets = [Target(position=i, question=t.question, category=t.category) for i, t in enumerate(spec.targets)]
            s.add(c)
            s.flush()
            return c.id

    def campaign(self, campaign_id: int) -> Campaign:
        with self.session() as s:
            c = s.scalar(select(Campaign).where(Campaign.id == campaign_id).options(selectinload(Campaign.targets)))
            if c is None:
                raise CcguardError(f"no campaign {campaign_id}")
            return c

    # -- attempts -----------------------------------------------------------------------------------------------
    def create_attempt(self, participant_id: int, campaign_id: int, nonce: str, kind: str, prompt: Any,
                       runs: list[tuple[int, list[dict[str, str]]]]) -> tuple[int, bool]:
        """Store an attempt and its pending runs (target id, messages) in one transaction. Returns (id, created):
        the same participant and nonce again returns the first attempt's id and False."""
        now = time.time()
        try:
            with self.session() as s:
                a = Attempt(participant_id=participant_id, campaign_id=campaign_id, nonce=nonce, kind=kind,
                            prompt=json.dumps(prompt, ensure_ascii=False), status="running", universal=False,
                            created_at=now)
                a.runs = [Run(target_id=t, messages=json.dumps(m, ensure_ascii=False), response="", status="pending")
                          for t, m in runs]
                s.add(a)
                s.flush()
                return a.id, True
        except IntegrityError:
            with self.session() as s:
                aid = s.scalar(select(Attempt.id).where(Attempt.participant_id == participant_id, Attempt.nonce == nonce))
            if aid is None:
                raise
            return aid, False

    # A row an admin deleted meanwhile is simply gone: these writes then do nothing.
    def start_run(self, run_id: int) -> None:
        with self.session() as s:
            if (r := s.get(Run, run_id)) is not None:
                r.status, r.started_at = "running", time.time()

    def save_response(self, run_id: int, response: str) -> None:
        with self.session() as s:
            if (r := s.get(Run, run_id)) is not None:
                r.response = response

    def finish_run(self, run_id: int, **fields: Any) -> None:
        with self.session() as s:
            if (r := s.get(Run, run_id)) is None:
                return
            for k, v in fields.items():
                setattr(r, k, v)
            r.status, r.finished_at = fields.get("status", "done"), time.time()

    def finish_attempt(self, attempt_id: int, status: str, universal: bool = False, error: str | None = None) -> None:
        with self.session() as s:
            if (a := s.get(Attempt, attempt_id)) is None:
                return
            a.status, a.universal, a.error, a.finished_at = status, universal, error, time.time()
            if status == "failed":
                for r in a.runs:
                    if r.status in ("pending", "running"):
                        r.status, r.finished_at = "failed", time.time()

    def recover(self) -> int:
        """Mark attempts a previous server left running as failed (it was killed mid-attempt). Returns how many."""
        with self.session() as s:
            stale = list(s.scalars(select(Attempt).where(Attempt.status == "running").options(selectinload(Attempt.runs))))
            for a in stale:
                a.status, a.error, a.finished_at = "failed", "interrupted: the server stopped during this attempt", time.time()
                for r in a.runs:
                    if r.status in ("pending", "running"):
                        r.status, r.finished_at = "failed", time.time()
            return len(stale)

    def attempt(self, attempt_id: int) -> Attempt | None:
        with self.session() as s:
            return s.scalar(select(Attempt).where(Attempt.id == attempt_id)
                            .options(selectinload(Attempt.runs).selectinload(Run.target), selectinload(Attempt.participant)))

    def attempts(self, participant_id: int | None = None, limit: int = 200) -> list[Attempt]:
        q = (select(Attempt).order_by(Attempt.id.desc()).limit(limit)
             .options(selectinload(Attempt.runs).selectinload(Run.target), selectinload(Attempt.participant)))
        if participant_id is not None:
            q = q.where(Attempt.participant_id == participant_id)
        with self.session() as s:
            return list(s.scalars(q))

    def attempt_by_nonce(self, participant_id: int, nonce: str) -> int | None:
        with self.session() as s:
            return s.scalar(select(Attempt.id).where(Attempt.participant_id == participant_id, Attempt.nonce == nonce))

    def running_attempts(self, participant_id: int) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Attempt).where(
                Attempt.participant_id == participant_id, Attempt.status == "running"))

    def delete_attempt(self, attempt_id: int) -> bool:
        with self.session() as s:
            a = s.get(Attempt, attempt_id)
            if a is None:
                return False
            s.delete(a)
            return True

    def delete_transcripts(self, participant_id: int) -> int:
        with self.session() as s:
            rows = list(s.scalars(select(Attempt).where(Attempt.participant_id == participant_id)))
            for a in rows:
                s.delete(a)
            return len(rows)

    def export(self) -> Iterator[dict[str, Any]]:
        """Every run as one flat record (the transcript, verdict and grade), oldest first."""
        with self.session() as s:
            q = (select(Run, Attempt, Participant, Target).join(Attempt, Run.attempt_id == Attempt.id)
                 .join(Participant, Attempt.participant_id == Participant.id).join(Target, Run.target_id == Target.id)
                 .order_by(Run.id))
            for r, a, p, t in s.execute(q):
                yield {
                    "run_id": r.id, "attempt_id": a.id, "participant": p.name, "campaign_id": a.campaign_id,
                    "kind": a.kind, "attempt_status": a.status, "universal": a.universal,
                    "prompt": json.loads(a.prompt), "target": t.question, "target_category": t.category,
                    "messages": json.loads(r.messages), "response": r.response, "status": r.status,
                    "blocked_stage": r.blocked_stage, "category": r.category, "released_chars": r.released_chars,
                    "finish_reason": r.finish_reason, "grade_level": r.grade_level, "grade_passed": r.grade_passed,
                    "grader": r.grader, "created_at": a.created_at, "finished_at": r.finished_at,
                }
