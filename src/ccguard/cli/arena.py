"""``ccguard arena``: the red-team web app, and its admin commands (invite, export)."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer

from ccguard.cli import llm_options as o
from ccguard.errors import CcguardError

app = typer.Typer(help="The red-team arena: people attack a guarded model; runs are graded for universal jailbreaks.",
                  no_args_is_help=False, invoke_without_command=True)

Db = Annotated[Path, typer.Option(help="The arena's SQLite database (created and migrated on first use).")]


@app.callback()
def arena(
    ctx: typer.Context,
    guard: Annotated[str | None, typer.Option(help="Guard directory, or a Hub repo id, to attack.")] = None,
    upstream: Annotated[str, typer.Option(help="OpenAI-compatible base URL (…/v1), or local[:MODEL].")] = "local",
    db: Annotated[Path, typer.Option(help="The arena's SQLite database.")] = Path("arena.sqlite"),
    campaign: Annotated[Path | None, typer.Option(help="YAML file of 5-10 target questions (default: one per harmful category of the guard's constitution).")] = None,
    require: Annotated[str, typer.Option(help="With the default campaign: the grade a success needs (specific or detailed).")] = "specific",
    host: Annotated[str, typer.Option(help="Bind address (loopback by default; beyond it, registration stays closed).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    upstream_key_env: Annotated[str, typer.Option(help="Env var holding the upstream's API key.")] = "OPENAI_API_KEY",
    upstream_model: Annotated[str | None, typer.Option(help="Upstream model id.")] = None,
    upstream_timeout: Annotated[float, typer.Option(help="Seconds to wait on the upstream (per stream event).")] = 60.0,
    slots: Annotated[int | None, typer.Option(min=1, help="Upstream requests in flight at once (default: 1 for local, 8 for a URL).")] = None,
    open_registration: Annotated[bool, typer.Option(help="Let anyone join by name (loopback only).")] = False,
    hide_live: Annotated[bool, typer.Option(help="Stream only progress to participants; text is shown after grading.")] = False,
    attempts_per_minute: Annotated[int, typer.Option(min=1, help="Attempts one participant may start per minute.")] = 10,
    max_tokens: Annotated[int, typer.Option(min=1, max=4096, help="Most tokens per response.")] = 384,
    secure_cookies: Annotated[bool, typer.Option(help="Mark the login cookie Secure (serve behind HTTPS).")] = False,
    backend: o.Backend = None,
    model: o.Model = None,
    base_url: o.BaseUrl = None,
    api_key_env: o.ApiKeyEnv = None,
    llm_config: o.LLMConfigFile = None,
) -> None:
    """Serve the arena. --backend (or --llm-config alone: its backend named 'judge', or its only one) is the LLM judge
    that grades responses; without one the offline heuristic grades, and the pages say which ran. On first start the
    admin's token is printed once."""
    if ctx.invoked_subcommand is not None:
        return
    if guard is None:
        raise CcguardError("--guard is required to serve the arena")
    from ccguard.server.app import is_loopback

    if open_registration and not is_loopback(host):
        raise CcguardError(f"--open-registration is refused when binding to {host}: invite participants instead")
    if require not in ("specific", "detailed"):
        raise CcguardError(f"--require must be specific or detailed, not {require!r}")
    import uvicorn

    from ccguard import constitution as C
    from ccguard.arena import campaign as camp
    from ccguard.arena.app import ArenaSettings, create_arena_app
    from ccguard.arena.grading import HeuristicGrader, JudgeGrader
    from ccguard.arena.runner import ProxyTarget
    from ccguard.arena.store import Store
    from ccguard.cli.serve import json_logging, make_upstream
    from ccguard.guard import Guard
    from ccguard.server import ServerSettings, create_app
    from ccguard.server.loopback import serving

    json_logging()
    spec = camp.load(campaign) if campaign else None
    if backend is None and llm_config is not None:
        backend = judge_name(llm_config)
    judge = o.client_from_options(backend, model, base_url, api_key_env, None, llm_config, False)
    grader = JudgeGrader(judge, f"{judge.spec.kind}:{judge.spec.model}") if judge is not None else HeuristicGrader()

    g = Guard.from_pretrained(guard)
    if spec is None:
        spec = camp.from_constitution(C.load(Path(g.path) / "constitution.yaml"), require=require)  # type: ignore[arg-type]
    store = Store(db)
    campaign_id = store.ensure_campaign(spec)
    if not store.has_admin():
        inv = store.invite("admin", "admin")
        print(f"arena admin token (shown once; only its hash is stored): {inv.token}", file=sys.stderr)
    up, n_slots = make_upstream(g, upstream, upstream_model, upstream_key_env, upstream_timeout, slots)
    key = secrets.token_urlsafe(24)  # the arena's own proxy listens on loopback and takes only this key
    proxy_app = create_app(g, up, ServerSettings(api_keys=frozenset({key}), report_verdicts=True, slots=n_slots,
                                                 slot_timeout=30.0, max_waiting=64, upstream_timeout=upstream_timeout,
                                                 max_tokens_cap=max_tokens))
    settings = ArenaSettings(open_registration=open_registration, hide_live=hide_live,
                             attempts_per_minute=attempts_per_minute, secure_cookies=secure_cookies)
    with serving(proxy_app) as proxy_url:
        arena_app = create_arena_app(store, campaign_id, ProxyTarget(f"{proxy_url}/v1", key, max_tokens), grader, settings)
        print(f"arena on http://{host}:{port} (campaign {spec.name}, {len(spec.targets)} targets, grader: {grader.name})",
              file=sys.stderr)
        uvicorn.run(arena_app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=10)


def judge_name(llm_config: Path) -> str:
    """The judge in an --llm-config given without --backend: the backend named 'judge', or the only one."""
    from ccguard.llm.config import load_llm_config

    names = sorted(load_llm_config(llm_config).backends)
    if "judge" in names:
        return "judge"
    if len(names) == 1:
        return names[0]
    raise CcguardError(f"--llm-config names {len(names)} backends ({', '.join(names) or 'none'}): pass --backend NAME "
                       "for the judge, or name one 'judge'", where=str(llm_config))


@app.command()
def invite(
    name: Annotated[str, typer.Argument(help="The participant's name.")],
    db: Db = Path("arena.sqlite"),
    admin: Annotated[bool, typer.Option(help="Make an admin.")] = False,
) -> None:
    """Create a participant and print their login token (shown once)."""
    from ccguard.arena.store import Store

    inv = Store(db).invite(name, "admin" if admin else "participant")
    print(inv.token)


@app.command()
def export(
    db: Db = Path("arena.sqlite"),
    out: Annotated[Path, typer.Option(help="JSONL file: one line per run (transcript, verdict, grade).")] = Path("arena.jsonl"),
) -> None:
    """Export every transcript as JSONL (admins' view: nothing hidden)."""
    from ccguard.arena.store import Store
    from ccguard.records import atomic_write_text

    if not db.is_file():
        raise CcguardError("no arena database here", where=str(db))
    rows = [json.dumps(r, ensure_ascii=False) for r in Store(db).export()]
    atomic_write_text(out, "".join(r + "\n" for r in rows))
    print(f"{len(rows)} runs -> {out}", file=sys.stderr)
