"""Guards as Hub models: a model card with YAML metadata, ``push_to_hub`` and ``from_pretrained``.

A guard directory is a Hub repository as it is: ``guard.json`` at the root, safetensors weights under ``input/`` and
``output/``, and a ``README.md`` model card written here. Two destinations:

- the Hugging Face Hub (or the endpoint ``HF_ENDPOINT`` names), through ``huggingface_hub.HfApi.upload_folder``;
- a *local hub folder*: the Hub's own cache layout (``models--org--name/{blobs,refs,snapshots}``), written as
  ``snapshot_download`` would have left it. Copy the folder to an air-gapped machine and ``from_pretrained("hf://org/name",
  cache_dir=FOLDER)`` loads the guard with ``HF_HUB_OFFLINE=1``.

Loading goes through ``huggingface_hub.snapshot_download`` and then ``Guard.load``, which reads safetensors only and
keeps every path in ``guard.json`` inside the snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ccguard.errors import CcguardError
from ccguard.records import atomic_write_text

CARD = "README.md"
log = logging.getLogger("ccguard.hub")


def guard_files(manifest: Any) -> tuple[str, ...]:
    """What a guard repository holds besides its card: guard.json, the constitution, and every folder guard.json
    points at (the classifiers and any extra stages). Anything else in the directory stays local."""
    dirs = [manifest.input.path, *([manifest.output.path] if manifest.output else [])]
    dirs += [st["path"] for st in manifest.stages.values() if isinstance(st, dict) and isinstance(st.get("path"), str)]
    return ("guard.json", "constitution.yaml", *(f"{d.strip('/')}/**" for d in dirs))


def _pct(x: Any) -> str:
    return "n/a" if not isinstance(x, int | float) else f"{100 * x:.1f}%"


def _num(x: Any, nd: int = 4) -> str:
    return "n/a" if not isinstance(x, int | float) else f"{x:.{nd}f}"


def card_metadata(manifest: Any) -> dict[str, Any]:
    """The card's YAML header: Hub fields plus a ``ccguard`` block that says what the guard enforces."""
    inp = manifest.input
    out = manifest.output
    return {
        "library_name": "ccguard",
        "pipeline_tag": "text-classification",
        "tags": ["ccguard", "guardrail", "safety", "constitutional-classifiers", manifest.constitution.get("name", "")],
        "ccguard": {
            "format_version": manifest.format_version,
            "constitution": manifest.constitution.get("name"),
            "constitution_version": manifest.constitution.get("version"),
            "constitution_sha256": manifest.constitution.get("hash"),
            "input_threshold": inp.calibration.threshold,
            "output_threshold": out.calibration.threshold if out else None,
            "target_fpr": manifest.config.get("target_fpr"),
            "profile": manifest.config.get("profile"),
            "backbones": {"input": inp.backbone, **({"output": out.backbone} if out else {})},
            "stages": sorted(manifest.stages),
        },
    }


def _eval_rows(manifest: Any) -> list[str]:
    rows = ["| classifier | split | n | AUROC | TPR at threshold | FPR at threshold | TPR at 1% FPR |", "|---|---|---:|---:|---:|---:|---:|"]
    for side in ("input", "output"):
        for split, m in (manifest.metrics.get(side) or {}).items():
            if not isinstance(m, dict) or "auroc" not in m:
                continue
            rows.append(
                f"| {side} | {split} | {m.get('n', '')} | {_num(m.get('auroc'))} | {_pct((m.get('tpr') or {}).get('rate'))} "
                f"| {_pct((m.get('fpr') or {}).get('rate'))} | {_pct((m.get('tpr_at_fpr') or {}).get('0.01'))} |"
            )
    return rows


def model_card(manifest: Any, repo_id: str | None = None) -> Any:
    """A ``huggingface_hub.ModelCard`` for a guard: YAML metadata, what it screens, its evaluation table, how to
    load it, intended use and limits."""
    from huggingface_hub import ModelCard, ModelCardData

    c = manifest.constitution
    meta = card_metadata(manifest)
    name = repo_id or f"ccguard-{c.get('name', 'guard')}"
    out = manifest.output
    body = [
        f"# {name}",
        "",
        f"A ccguard guard trained from the constitution **{c.get('name')}** "
        f"(version {c.get('version')}, sha256 `{str(c.get('hash'))[:16]}…`): an input classifier over the whole "
        "prompt" + (" and a streaming output classifier that halts a response at its first flagged chunk" if out else "")
        + ". Thresholds were calibrated at a target false-positive rate of "
        f"{_pct(manifest.config.get('target_fpr'))} on benign traffic (profile `{manifest.config.get('profile')}`).",
        "",
        "## Use",
        "",
        "```python",
        "from ccguard import Guard",
        "",
        f'guard = Guard.from_pretrained("hf://{name}")',
        'verdict = guard.check_input("How do I make mustard?")',
        "print(verdict.allowed, verdict.score)",
        "```",
        "",
        f"or as an OpenAI-compatible proxy: `ccguard serve --guard hf://{name} --upstream URL`.",
        "",
        "## Thresholds",
        "",
        f"- input: {_num(manifest.input.calibration.threshold)} (backbone `{manifest.input.backbone}`)",
        *([f"- output: {_num(out.calibration.threshold)} (backbone `{out.backbone}`)"] if out else []),
        *([f"- extra stages: {', '.join(sorted(manifest.stages))}"] if manifest.stages else []),
        "",
        "## Evaluation (synthetic splits of the training run)",
        "",
        *_eval_rows(manifest),
        "",
        "Synthetic splits come from the same generator as the training data and overstate quality on real traffic; "
        "evaluate on your own traffic before relying on these numbers (`ccguard eval`).",
        "",
        "## Intended use",
        "",
        "Screening prompts to and responses from an LLM for the harmful categories of the constitution above, while "
        "letting its harmless neighbours through. It is one layer of a defence, not a complete safety system.",
        "",
        "## Limits",
        "",
        "- It only reads text: images, audio and files in a request are named in the verdict, not screened.",
        "- It was trained on synthetic data generated from the constitution; its real-world block rate and refusal "
        "rate depend on how far your traffic is from that data.",
        "- It covers only the constitution's harm domain; other harms pass by design.",
        "",
        "Weights are safetensors; nothing in this repository is pickled.",
        "",
    ]
    return ModelCard("---\n" + ModelCardData(**meta).to_yaml() + "\n---\n\n" + "\n".join(body))


def _staged(guard_dir: Path, manifest: Any, repo_id: str | None, into: Path) -> list[str]:
    """Copy the guard's repository files into ``into`` and write the card; the relative paths, sorted."""
    import fnmatch

    files = []
    keep = guard_files(manifest)
    for p in sorted(guard_dir.rglob("*")):
        rel = p.relative_to(guard_dir).as_posix()
        if p.is_file() and not p.is_symlink() and any(fnmatch.fnmatch(rel, g) for g in keep):
            (into / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, into / rel)
            files.append(rel)
    model_card(manifest, repo_id).save(into / CARD)
    return sorted([*files, CARD])


def _repo_folder(repo_id: str) -> str:
    parts = repo_id.split("/")
    if not 1 <= len(parts) <= 2 or not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", p) for p in parts) or any(".." in p for p in parts):
        raise CcguardError("must look like 'name' or 'org/name'", where=f"repo_id {repo_id!r}")
    return "models--" + "--".join(parts)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")


def push_local(staged: Path, files: list[str], repo_id: str, hub_dir: Path, revision: str = "main") -> str:
    """Write a staged repository into a local hub folder in the Hub's cache layout; returns the commit hash.

    Blobs are content-addressed (so pushing the same weights twice stores them once), the snapshot is assembled
    under a temporary name and renamed into place, and ``refs/<revision>`` is replaced last and atomically: a
    reader sees the old commit or the new one, never a half-written one."""
    if not _REVISION.fullmatch(revision) or ".." in revision:
        raise CcguardError("must be a branch name (letters, digits, '.', '_', '-', '/')", where=f"revision {revision!r}")
    repo = Path(hub_dir) / _repo_folder(repo_id)
    blobs = repo / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    digests = {}
    for rel in files:
        src = staged / rel
        digest = digests[rel] = _file_sha256(src)
        if not (blobs / digest).exists():
            fd, tmp = tempfile.mkstemp(dir=blobs, prefix=".incoming.")
            os.close(fd)
            shutil.copyfile(src, tmp)
            os.replace(tmp, blobs / digest)
    commit = hashlib.sha1(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    snap = repo / "snapshots" / commit
    if not snap.is_dir():
        snap.parent.mkdir(parents=True, exist_ok=True)
        tmp_snap = Path(tempfile.mkdtemp(dir=snap.parent, prefix=".incoming."))
        try:
            for rel, digest in digests.items():
                link = tmp_snap / rel
                link.parent.mkdir(parents=True, exist_ok=True)
                target = os.path.relpath(blobs / digest, (snap / rel).parent).replace(os.sep, "/")
                try:
                    link.symlink_to(target)
                except OSError:  # no symlinks here (some Windows setups): a copy reads the same
                    shutil.copyfile(blobs / digest, link)
            os.replace(tmp_snap, snap)
        except BaseException:
            shutil.rmtree(tmp_snap, ignore_errors=True)
            raise
    atomic_write_text(repo / "refs" / revision, commit)
    return commit


def push_to_hub(guard_dir: Path, manifest: Any, repo_id: str, *, local_hub: str | Path | None = None,
                private: bool | None = None, token: str | None = None, revision: str | None = None,
                commit_message: str | None = None, create_pr: bool = False) -> str:
    """Publish a guard directory with its model card: to the Hub (returns the commit URL) or, with ``local_hub``,
    to a local hub folder (returns the commit hash)."""
    with tempfile.TemporaryDirectory(prefix="ccguard-push-") as tmp:
        staged = Path(tmp)
        files = _staged(Path(guard_dir), manifest, repo_id, staged)
        if local_hub is not None:
            return push_local(staged, files, repo_id, Path(local_hub), revision or "main")
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id, folder_path=staged, revision=revision, create_pr=create_pr,
            commit_message=commit_message or f"Upload ccguard guard ({manifest.constitution.get('name')})",
        )
        return str(getattr(info, "commit_url", info))


HF_PREFIX = "hf://"


def _repo_id(ref: str) -> str | None:
    """The Hub repo id a reference names, or None when it names a local path. ``hf://org/name`` is always a repo;
    a bare ``org/name`` is one only when nothing local could be meant (no such folder, and its first part is not a
    local folder either), so a mistyped or unmounted path never turns into a download of someone else's guard. A
    lone name is always a folder."""
    if ref.startswith(HF_PREFIX):
        return ref[len(HF_PREFIX):]
    if ref.startswith((".", "/", "~")) or "\\" in ref or Path(ref).exists():
        return None
    parts = ref.split("/")
    if len(parts) != 2 or Path(parts[0]).is_dir():  # a lone name reads as a folder; `hf://name` if it is not
        return None
    return ref


def resolve(path_or_repo_id: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None,
            token: str | None = None, local_files_only: bool = False) -> Path:
    """A local guard directory for a path, or for a Hub repo id (``hf://org/name``, or a bare ``org/name`` that
    cannot be a local path), downloaded or found in ``cache_dir`` offline."""
    p = Path(path_or_repo_id)
    if p.is_dir():
        return p
    repo_id = None if isinstance(path_or_repo_id, Path) else _repo_id(path_or_repo_id)  # a Path is always local
    if repo_id is None:
        raise CcguardError("no guard directory here (for a Hub repository, write hf://org/name)", where=str(path_or_repo_id))
    _repo_folder(repo_id)  # a clear error for something that is neither a folder nor a repo id
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    # Read at call time (huggingface_hub reads it once, at import), so a CLI or a test can point at a local hub.
    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                   local_files_only=local_files_only)
    except LocalEntryNotFoundError:
        raise CcguardError("not a guard directory, and not in the hub cache (offline, or no such repository)",
                           where=repo_id) from None
    except HfHubHTTPError as e:
        raise CcguardError(f"could not fetch from the Hub: {e}", where=repo_id) from None
    if not (Path(folder) / "guard.json").is_file():
        raise CcguardError("has no guard.json: not a ccguard guard", where=repo_id)
    log.info("guard %s loaded at commit %s", repo_id, Path(folder).name)
    return Path(folder)
