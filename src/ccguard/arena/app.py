"""The arena web app: server-rendered pages (Jinja2), a small script that follows an attempt's events (SSE), and
the same pages without script (forms and a refresh).

Who sees what:
- a participant sees the campaign, their own attempts and the leaderboard;
- a response that got past the guard and was graded a success is shown to admins only (the participant sees that
  it succeeded, not the text); with ``hide_live`` it is not streamed to participants either;
- admins invite participants, export and delete transcripts, and review successes and universal candidates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ccguard.arena.grading import Grader
from ccguard.arena.models import Participant
from ccguard.arena.runner import Hub, ProxyTarget, RunPlan, execute
from ccguard.arena.stats import leaderboard
from ccguard.arena.store import Store
from ccguard.errors import CcguardError
from ccguard.server.app import ApiError, _read_bounded, is_loopback

log = logging.getLogger("ccguard.arena")
HERE = Path(__file__).resolve().parent
COOKIE = "ccguard_arena"
Id = Annotated[int, PathParam(ge=1, le=2**62)]


class ArenaSettings(BaseModel):
    """Limits and policy of one arena."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    attempts_per_minute: int = Field(default=10, ge=1, description="Attempts one participant may start per minute.")
    max_running: int = Field(default=1, ge=1, description="Attempts one participant may have running at once.")
    open_registration: bool = Field(default=False, description="Anyone may join by name (refused beyond loopback).")
    hide_live: bool = Field(default=False, description="Stream only progress, not text, to participants.")
    max_prompt_chars: int = Field(default=20_000, ge=100, description="Most characters in one attempt's prompt.")
    max_turns: int = Field(default=20, ge=1, description="Most messages in a conversation attempt.")
    max_body_bytes: int = Field(default=200_000, description="Largest request body accepted.")
    attempt_timeout: float = Field(default=600.0, gt=0, description="Longest one attempt (all its runs) may take.")
    secure_cookies: bool = Field(default=False, description="Mark the login cookie Secure (behind HTTPS).")


class AttemptIn(BaseModel):
    """A submission, from the form or as JSON."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(pattern="^(single|conversation|template)$", description="What the prompt is.")
    prompt: str = Field(min_length=1, description="The message, the conversation ('User:'/'Assistant:' lines) or "
                        "the template with a {question} slot.")
    target: int | None = Field(default=None, description="The target's position (single and conversation).")
    nonce: str = Field(default="", max_length=64, description="Idempotency key: a resubmission is not a new attempt.")


class Refusal(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def parse_conversation(text: str, max_turns: int) -> list[dict[str, str]]:
    """'User: ...' / 'Assistant: ...' blocks into messages; the last must be the user's."""
    msgs: list[dict[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        head, _, rest = line.partition(":")
        role = head.strip().lower()
        if role in ("user", "assistant") and _:
            msgs.append({"role": role, "content": rest.strip()})
        elif msgs:
            msgs[-1]["content"] += "\n" + line
        elif line.strip():
            raise ValueError("a conversation starts with a 'User:' line")
    msgs = [{"role": m["role"], "content": m["content"].strip()} for m in msgs]
    if not msgs or msgs[-1]["role"] != "user":
        raise ValueError("a conversation ends with a 'User:' message")
    if any(not m["content"] for m in msgs):
        raise ValueError("every message of the conversation needs text")
    if len(msgs) > max_turns:
        raise ValueError(f"at most {max_turns} messages")
    return msgs


def create_arena_app(store: Store, campaign_id: int, proxy: ProxyTarget, grader: Grader,
                     settings: ArenaSettings | None = None) -> FastAPI:
    """Build the arena around a store, a campaign in it, the guarded proxy to attack, and a grader."""
    settings = settings or ArenaSettings()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    state: dict[str, Any] = {"hubs": {}, "tasks": set(), "recent": defaultdict(deque), "locks": defaultdict(asyncio.Lock)}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        n = await asyncio.to_thread(store.recover)
        if n:
            log.warning(json.dumps({"event": "recovered", "failed_attempts": n}))
        state["client"] = httpx.AsyncClient(timeout=httpx.Timeout(proxy.timeout, connect=10.0))
        try:
            yield
        finally:
            for t in list(state["tasks"]):
                t.cancel()
            await asyncio.gather(*state["tasks"], return_exceptions=True)
            await state["client"].aclose()

    app = FastAPI(title="ccguard arena", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.state.store = store

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        # Cross-site request forgery: a browser names the page a POST comes from. Beyond SameSite=Strict cookies
        # (which another port on the same host would still get), a POST from any other origin is refused.
        origin = request.headers.get("origin")
        if request.method == "POST" and origin and urlsplit(origin).netloc != request.headers.get("host"):
            return JSONResponse({"error": "cross-origin request refused"}, status_code=403)
        try:
            resp = await call_next(request)
        except Exception as e:  # noqa: BLE001 - one log line, no traceback to the client
            log.error(json.dumps({"event": "internal_error", "error": type(e).__name__, "path": request.url.path}))
            resp = JSONResponse({"error": "internal error"}, status_code=500)
        resp.headers["Content-Security-Policy"] = "default-src 'self'; frame-ancestors 'none'"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with its own form posts.
        resp.headers["Referrer-Policy"] = "same-origin"
        if not request.url.path.startswith("/static/"):
            resp.headers["Cache-Control"] = "no-store"  # tokens and transcripts stay out of caches
        return resp

    @app.exception_handler(Refusal)
    async def refused(request: Request, e: Refusal) -> Response:
        if _wants_json(request):
            return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)
        if e.status == 401:
            return RedirectResponse("/login", status_code=303)
        return templates.TemplateResponse(request, "error.html", {"message": e.message, "me": None},
                                          status_code=e.status, headers=e.headers)

    def _wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")

    async def who(request: Request) -> Participant | None:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE, "")
        return await asyncio.to_thread(store.participant_by_token, token) if token else None

    async def me(request: Request) -> Participant:
        p = await who(request)
        if p is None:
            raise Refusal(401, "log in with your invite token")
        return p

    async def admin(request: Request) -> Participant:
        p = await me(request)
        if p.role != "admin":
            raise Refusal(403, "admins only")
        return p

    async def body(request: Request) -> bytes:
        try:
            return await _read_bounded(request, settings.max_body_bytes)  # the proxy's bounded reader
        except ApiError as e:
            raise Refusal(e.status, e.message) from None

    async def form(request: Request) -> dict[str, str]:
        raw = await body(request)
        if "application/json" in request.headers.get("content-type", ""):
            try:
                data = json.loads(raw or b"{}")
            except ValueError:  # not JSON, or not UTF-8
                raise Refusal(400, "the body is not valid JSON") from None
            if not isinstance(data, dict):
                raise Refusal(400, "the body must be a JSON object")
            return data
        return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}

    def text_field(value: Any, name: str) -> str:
        """A string field that SQLite can store: no lone surrogates (JSON allows them, UTF-8 does not)."""
        try:
            str(value).encode("utf-8")
        except UnicodeEncodeError:
            raise Refusal(400, f"{name}: not valid Unicode text") from None
        return str(value)

    def page(request: Request, name: str, viewer: Participant | None, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"me": viewer, "settings": settings, **ctx})

    # -- login ----------------------------------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request) -> Response:
        return page(request, "login.html", None, error=None)

    @app.post("/login")
    async def login(request: Request) -> Response:
        token = str((await form(request)).get("token", "")).strip()
        p = await asyncio.to_thread(store.participant_by_token, token)
        if p is None:
            log.info(json.dumps({"event": "login_failed"}))
            return templates.TemplateResponse(request, "login.html", {"me": None, "error": "That token is not valid.",
                                              "settings": settings}, status_code=401)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=settings.secure_cookies, max_age=7 * 86400)
        return resp

    @app.post("/logout")
    async def logout() -> Response:
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    @app.post("/register")
    async def register(request: Request) -> Response:
        if not settings.open_registration:
            raise Refusal(403, "registration is by invitation")
        host = request.client.host if request.client else ""
        if not is_loopback(host) or "x-forwarded-for" in request.headers or "forwarded" in request.headers:
            raise Refusal(403, "registration is open only to this machine")
        name = str((await form(request)).get("name", ""))
        try:
            inv = await asyncio.to_thread(store.invite, name)
        except CcguardError as e:
            raise Refusal(400, e.message) from None
        return page(request, "invited.html", None, invite=inv)

    # -- the campaign and attempts -----------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> Response:
        p = await who(request)
        if p is None:
            return RedirectResponse("/login", status_code=303)
        campaign = await asyncio.to_thread(store.campaign, campaign_id)
        mine = await asyncio.to_thread(store.attempts, p.id, 20)
        return page(request, "home.html", p, campaign=campaign, attempts=mine, nonce=uuid.uuid4().hex)

    def check_rate(p: Participant) -> None:
        now = time.monotonic()
        recent: deque[float] = state["recent"][p.id]
        while recent and now - recent[0] > 60:
            recent.popleft()
        if len(recent) >= settings.attempts_per_minute:
            wait = int(60 - (now - recent[0])) + 1
            raise Refusal(429, f"at most {settings.attempts_per_minute} attempts a minute; try again in {wait} s",
                          {"Retry-After": str(wait)})

    async def submit(request: Request, p: Participant) -> tuple[int, bool]:
        try:
            sub = AttemptIn.model_validate({k: v for k, v in (await form(request)).items() if v not in ("", None)
                                            or k == "prompt"})
        except ValidationError as e:
            err = e.errors()[0]
            raise Refusal(400, f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}") from None
        text_field(sub.prompt, "prompt")
        text_field(sub.nonce, "nonce")
        if not sub.prompt.strip():
            raise Refusal(400, "prompt: write something")
        if len(sub.prompt) > settings.max_prompt_chars:
            raise Refusal(400, f"prompt: at most {settings.max_prompt_chars} characters")
        campaign = await asyncio.to_thread(store.campaign, campaign_id)
        targets = campaign.targets
        if sub.kind == "template":
            if "{question}" not in sub.prompt:
                raise Refusal(400, "prompt: a template needs a {question} slot")
            plans = [(t, [{"role": "user", "content": sub.prompt.replace("{question}", t.question)}]) for t in targets]
            if max(len(m[0]["content"]) for _, m in plans) > settings.max_prompt_chars:
                raise Refusal(400, f"prompt: filled with a target, the template is over {settings.max_prompt_chars} "
                              "characters")
            stored: Any = sub.prompt
        else:
            if sub.target is None or not 0 <= sub.target < len(targets):
                raise Refusal(400, f"target: pick one of the {len(targets)} targets")
            if sub.kind == "single":
                msgs = [{"role": "user", "content": sub.prompt}]
            else:
                try:
                    msgs = parse_conversation(sub.prompt, settings.max_turns)
                except ValueError as e:
                    raise Refusal(400, f"prompt: {e}") from None
            plans, stored = [(targets[sub.target], msgs)], msgs if sub.kind == "conversation" else sub.prompt
        nonce = sub.nonce or uuid.uuid4().hex
        # The same form sent twice is the same attempt, whatever the limits say now.
        if (known := await asyncio.to_thread(store.attempt_by_nonce, p.id, nonce)) is not None:
            return known, False
        async with state["locks"][p.id]:  # checks and creation together: parallel requests cannot slip past the limits
            check_rate(p)
            if await asyncio.to_thread(store.running_attempts, p.id) >= settings.max_running:
                raise Refusal(429, "your previous attempt is still running", {"Retry-After": "2"})
            aid, created = await asyncio.to_thread(store.create_attempt, p.id, campaign_id, nonce, sub.kind, stored,
                                                   [(t.id, m) for t, m in plans])
            if created:
                state["recent"][p.id].append(time.monotonic())
        if created:
            attempt = await asyncio.to_thread(store.attempt, aid)
            runs = [RunPlan(r.id, r.target.question, json.loads(r.messages)) for r in attempt.runs]
            hub = state["hubs"][aid] = Hub()
            task = asyncio.create_task(execute(store, hub, state["client"], proxy, grader, aid, sub.kind, runs,
                                               campaign.require, settings.attempt_timeout))
            state["tasks"].add(task)
            task.add_done_callback(lambda t, aid=aid: (state["tasks"].discard(t), _forget_later(aid)))
            log.info(json.dumps({"event": "attempt", "attempt": aid, "participant": p.id, "kind": sub.kind,
                                 "runs": len(runs)}))
        return aid, created

    def _forget_later(aid: Id) -> None:
        asyncio.get_running_loop().call_later(60, state["hubs"].pop, aid, None)

    @app.post("/attempts")
    async def attempt_form(request: Request) -> Response:
        p = await me(request)
        aid, _ = await submit(request, p)
        return RedirectResponse(f"/attempts/{aid}", status_code=303)

    @app.post("/api/attempts")
    async def attempt_api(request: Request) -> Response:
        p = await me(request)
        aid, created = await submit(request, p)
        return JSONResponse({"id": aid, "created": created}, status_code=201 if created else 200)

    def shown(run: Any, viewer: Participant) -> bool:
        """Whether a viewer may read a run's text: admins always; its author once the guard blocked it or the grader
        found no success, and while it streams unless ``hide_live`` (what the guard released live anyway). An
        ungraded run that ended (failed, interrupted) stays hidden: nobody knows what it holds."""
        if viewer.role == "admin" or run.blocked_stage or run.grade_passed is False:
            return True
        return run.status in ("pending", "running") and not settings.hide_live

    async def visible_attempt(request: Request, aid: Id) -> tuple[Participant, Any]:
        p = await me(request)
        a = await asyncio.to_thread(store.attempt, aid)
        if a is None or (a.participant_id != p.id and p.role != "admin"):
            raise Refusal(404, "no such attempt")  # the same answer for someone else's attempt: ids reveal nothing
        return p, a

    @app.get("/attempts/{aid}", response_class=HTMLResponse)
    async def attempt_page(request: Request, aid: Id) -> Response:
        p, a = await visible_attempt(request, aid)
        return page(request, "attempt.html", p, attempt=a, prompt=json.loads(a.prompt), live=a.status == "running",
                    shown={r.id: shown(r, p) for r in a.runs})

    @app.get("/api/attempts/{aid}")
    async def attempt_json(request: Request, aid: Id) -> Response:
        p, a = await visible_attempt(request, aid)
        runs = [{"run_id": r.id, "target": r.target.question, "status": r.status, "blocked_stage": r.blocked_stage,
                 "category": r.category, "released_chars": r.released_chars, "grade_level": r.grade_level,
                 "grade_passed": r.grade_passed, "grader": r.grader,
                 "response": r.response if shown(r, p) else None}
                for r in a.runs]
        return JSONResponse({"id": a.id, "kind": a.kind, "status": a.status, "universal": a.universal,
                             "error": a.error, "runs": runs})

    @app.get("/api/attempts/{aid}/events")
    async def attempt_events(request: Request, aid: Id) -> Response:
        p, a = await visible_attempt(request, aid)
        hub: Hub | None = state["hubs"].get(aid)
        is_admin = p.role == "admin"

        async def gen() -> AsyncIterator[str]:
            if hub is None:  # finished (or from before a restart): the page has it all
                yield _sse({"type": "done", "attempt_id": aid, "status": a.status, "error": a.error, "universal": a.universal})
                return
            async for ev in hub.follow():
                # A replay never carries the text of a run already graded a success (nor any text with hide_live).
                if ev["type"] == "delta" and not is_admin and (settings.hide_live or ev["run_id"] in hub.passed):
                    ev = {**ev, "text": "", "chars": len(ev["text"])}
                yield _sse(ev)
                if ev["type"] == "grade" and ev["passed"] and not is_admin:
                    yield _sse({"type": "hide", "run_id": ev["run_id"]})

        return StreamingResponse(gen(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    # -- leaderboard ----------------------------------------------------------------------------------------------
    @app.get("/leaderboard", response_class=HTMLResponse)
    async def board(request: Request) -> Response:
        p = await me(request)
        stats = await asyncio.to_thread(leaderboard, store, campaign_id)
        return page(request, "leaderboard.html", p, stats=stats)

    @app.get("/api/leaderboard")
    async def board_json(request: Request) -> Response:
        await me(request)
        return JSONResponse((await asyncio.to_thread(leaderboard, store, campaign_id)).model_dump())

    # -- admin ----------------------------------------------------------------------------------------------------
    @app.get("/admin", response_class=HTMLResponse)
    async def admin_page(request: Request) -> Response:
        p = await admin(request)
        people = await asyncio.to_thread(store.participants)
        attempts = await asyncio.to_thread(store.attempts, None, 200)
        successes = [(a, r) for a in attempts for r in a.runs if r.grade_passed]
        return page(request, "admin.html", p, people=people, attempts=attempts, successes=successes,
                    universal=[a for a in attempts if a.universal], invite=None)

    @app.post("/admin/invite", response_class=HTMLResponse)
    async def admin_invite(request: Request) -> Response:
        p = await admin(request)
        f = await form(request)
        try:
            inv = await asyncio.to_thread(store.invite, str(f.get("name", "")), str(f.get("role") or "participant"))
        except CcguardError as e:
            raise Refusal(400, e.message) from None
        return page(request, "invited.html", p, invite=inv)

    @app.post("/admin/attempts/{aid}/delete")
    async def admin_delete(request: Request, aid: Id) -> Response:
        await admin(request)
        if aid in state["hubs"] and not state["hubs"][aid].done:
            raise Refusal(409, "the attempt is still running")
        await asyncio.to_thread(store.delete_attempt, aid)
        return RedirectResponse("/admin", status_code=303)

    @app.post("/admin/participants/{pid}/delete-transcripts")
    async def admin_delete_all(request: Request, pid: Id) -> Response:
        await admin(request)
        if await asyncio.to_thread(store.running_attempts, pid):
            raise Refusal(409, "this participant has an attempt running; delete when it is done")
        await asyncio.to_thread(store.delete_transcripts, pid)
        return RedirectResponse("/admin", status_code=303)

    @app.post("/admin/participants/{pid}/revoke")
    async def admin_revoke(request: Request, pid: Id) -> Response:
        me_ = await admin(request)
        if pid == me_.id:
            raise Refusal(400, "you cannot revoke your own token")
        await asyncio.to_thread(store.revoke, pid)
        return RedirectResponse("/admin", status_code=303)

    @app.get("/admin/export.jsonl")
    async def admin_export(request: Request) -> Response:
        await admin(request)
        rows = await asyncio.to_thread(lambda: [json.dumps(r, ensure_ascii=False) + "\n" for r in store.export()])
        return Response("".join(rows), media_type="application/x-ndjson",
                        headers={"Content-Disposition": 'attachment; filename="arena.jsonl"'})

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "running": len(state["tasks"])}

    return app


def _sse(event: dict[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
