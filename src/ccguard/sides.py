"""The output side of a run (train, calibrate and evaluate the output classifier), in this process or beside it.

On a CPU-only machine the run's two sides share no state until the guard is written, and two processes of one thread
each do more work than one process of two threads: a MiniLM training step takes 1.09 s on one core of this 2-core
EPYC and 0.62 s on both, so two steps side by side finish in 1.09 s where one process needs 1.24 s (design/032).
So `run` starts the output side in a second process, keeps the input side in its own, and gives the side that is
still working every core once the other one is done. Both processes score and train the same way as a serial run;
only float rounding differs, since a gradient summed by two threads is not added in the order one thread adds it.

The child is a fresh interpreter (:func:`child_main`), not a ``multiprocessing`` spawn, so a user's script that
calls :func:`ccguard.pipeline.run` needs no ``if __name__ == "__main__"`` guard. The job and the answer are JSON
files in a private temporary folder, so nothing is unpickled. A backbone registered in the user's script (rather
than through an entry point) does not exist in the child: such runs need ``parallel=False``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter
from rich.console import Console

from ccguard.constitution import Constitution
from ccguard.errors import CcguardError
from ccguard.train.args import OutputTrainArgs

if TYPE_CHECKING:
    from ccguard.profiles import Profile


@dataclass(frozen=True)
class OutputSideJob:
    """What the output side needs: everything is decided by the parent before the child starts."""

    const: Constitution
    args: OutputTrainArgs  # with the run's seed
    data_dir: Path
    guard_dir: Path
    train_sha: str  # the output training file's hash, part of the training fingerprint
    target_fpr: float  # on the output validation split's harmless answers
    refusal_fpr: float | None = None  # a cap on halted refusals of harmful requests, if any
    n_val: int | None = None  # output validation exchanges scored for calibration (None: all)
    n_test: int | None = None  # output test exchanges scored for the report (None: all)
    threads: int = 0  # intra-op threads to start with (0: leave torch's setting)
    grow_to: int = 0  # threads to take once ``peer_done`` exists
    peer_done: Path | None = None  # a file the other side creates when it has finished
    quiet: bool = False  # the parent's console is quiet: so is the child's
    parent_pid: int = 0  # the child exits when this process is gone (0: no check)

    @classmethod
    def for_run(cls, const: Constitution, profile: Profile, seed: int, data_dir: Path, guard_dir: Path, train_sha: str,
                quiet: bool = False) -> OutputSideJob:
        """The output side of a run of ``profile`` with ``seed``."""
        n_eval = profile.eval_max_examples
        # The output split's harmless answers are hard neighbours almost to a row: helpful answers on the
        # constitution's topics, style twins that differ from a harmful seed answer only in the topic, out-of-scope
        # compliance. Answers to everyday requests score near 0. So they get the input side's cap on hard neighbours,
        # not the everyday target: 0.5% of them was the top seven, three seed answers in several voices, and moved the
        # threshold from 0.99 to 0.9995 between two seeds (design/025).
        return cls(const=const, args=replace(profile.output_train, seed=seed), data_dir=data_dir, guard_dir=guard_dir,
                   train_sha=train_sha, target_fpr=max(profile.target_fpr, profile.hard_fpr or 0.0),
                   refusal_fpr=profile.output_refusal_fpr, n_val=profile.output_eval_max or (n_eval and 2 * n_eval),
                   n_test=profile.test_max_examples or profile.output_eval_max or n_eval, quiet=quiet)

    def to_json(self) -> str:
        return _JOB.dump_json(self).decode()

    @classmethod
    def from_json(cls, text: str) -> OutputSideJob:
        return _JOB.validate_json(text)


_JOB = TypeAdapter(OutputSideJob)


@dataclass(frozen=True)
class OutputSide:
    """The trained, calibrated and evaluated output classifier, as the guard's manifest and the report need it."""

    training: dict[str, Any]
    calibration: dict[str, Any]  # policy.Calibration, dumped
    metrics: dict[str, Any]  # evaluate_output's, with the calibration
    spec: dict[str, Any]  # the classifier's OutputSpec
    stages: dict[str, float]


def set_threads(n: int) -> None:
    """This process's intra-op threads, and the cap that :func:`ccguard.classifiers.backbone.torch_setup` keeps to (a
    training function calls it again, and would otherwise take every core)."""
    import torch

    from ccguard.classifiers.backbone import THREADS_ENV

    os.environ[THREADS_ENV] = str(n)
    torch.set_num_threads(n)


@contextlib.contextmanager
def thread_cap(n: int) -> Iterator[None]:
    """:func:`set_threads` for the duration; the cap and the thread count are put back after."""
    import torch

    from ccguard.classifiers.backbone import THREADS_ENV

    before, threads = os.environ.get(THREADS_ENV), torch.get_num_threads()
    set_threads(n)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = before
        torch.set_num_threads(threads)


def thread_grower(done: Callable[[], bool], total: int) -> Callable[[], None]:
    """A callback for every training step: once ``done()`` is true (the other side has finished), this process takes
    ``total`` intra-op threads. torch (OpenMP) takes the count from the thread that sets it, so this runs on the
    training thread, not on a watcher of its own."""
    import torch

    def grow() -> None:
        if total > torch.get_num_threads() and done():
            set_threads(total)

    return grow


def train_output_side(job: OutputSideJob, console: Console, on_step: Callable[[], None] | None = None,
                      state: Any = None, init: tuple[Path, str] | None = None) -> tuple[Any, dict[str, Any]]:
    """Train the output classifier, or load an identical saved one: the classifier and its training record. ``state``
    and ``init`` as for :func:`ccguard.pipeline.train_stage`."""
    from ccguard.pipeline import train_stage

    return train_stage("output", job.const, job.args,
                       job.data_dir / "output_train.jsonl", job.train_sha, job.guard_dir, console, state, init,
                       on_step=on_step, bar_position=1 if on_step is not None else None)


def calibrate_output_side(job: OutputSideJob, oclf: Any, training: dict[str, Any], console: Console,
                          stages: dict[str, float], between: Callable[[], None] | None = None) -> OutputSide:
    """Calibrate the output classifier on the output validation split and evaluate it on the output test split;
    ``between`` runs between the two."""
    from ccguard.evaluate.report import evaluate_output
    from ccguard.pipeline import _subsample, _timed
    from ccguard.policy import calibrate_output
    from ccguard.records import read_examples, render_prompt

    seed = job.args.seed
    oval = _subsample(read_examples(job.data_dir / "output_val.jsonl"), job.n_val, seed)
    otest = _subsample(read_examples(job.data_dir / "output_test.jsonl"), job.n_test, seed)
    console.print(f"calibrating the output classifier on {len(oval)} validation exchanges ...")
    with _timed(stages, "calibrate_output"):
        oval_scores = oclf.score([render_prompt(e.prompt) for e in oval], [e.response or "" for e in oval])
        harmful_ids = {c.id for c in job.const.harmful}
        ocal = calibrate_output(oval, [s.score for s in oval_scores], harmful_categories=harmful_ids,
                                target_fpr=job.target_fpr, refusal_fpr=job.refusal_fpr)
    console.print(f"output threshold {ocal.threshold:.4f}: val FPR {ocal.fpr.fmt()} on answers to harmless requests, "
                  f"val TPR {ocal.tpr.fmt()}; refusals of harmful requests halted {ocal.hard.fmt()}")
    if between is not None:
        between()
    with _timed(stages, "evaluate_output"):
        omet = evaluate_output(oclf, oval, oval_scores, otest, ocal.threshold, harmful_ids)
    omet["calibration"] = ocal.model_dump()
    return OutputSide(training=training, calibration=ocal.model_dump(), metrics=omet, spec=asdict(oclf.spec),
                      stages=dict(stages))


def output_side(job: OutputSideJob, console: Console) -> OutputSide:
    """The whole output side, as the child process runs it: train, then calibrate and evaluate. Starts with
    ``job.threads`` threads and takes ``job.grow_to`` once the file ``job.peer_done`` exists; exits at the next
    training step if the parent (``job.parent_pid``) is gone."""
    from ccguard.pipeline import _timed

    if job.threads:
        set_threads(job.threads)
    peer = job.peer_done
    grow = thread_grower(lambda: peer is not None and peer.exists(), job.grow_to) if job.grow_to else (lambda: None)

    def on_step() -> None:
        if job.parent_pid and os.getppid() != job.parent_pid:
            _remove_folder(job.peer_done)
            os._exit(3)  # orphaned: nobody will read the answer, and a re-run may be writing the same guard
        grow()

    stages: dict[str, float] = {}
    with _timed(stages, "train_output"):
        oclf, training = train_output_side(job, console, on_step=on_step)
    grow()
    return calibrate_output_side(job, oclf, training, console, stages, between=grow)


def can_run_beside(threads: int) -> bool:
    """Whether a second process pays: a CPU-only torch with at least two intra-op threads. Training runs on CUDA
    where there is one (the two sides would then queue on one device), else on the CPU; under ``accelerate launch``
    the processes already share the cores, and the caller checks that."""
    import torch

    return threads >= 2 and not torch.cuda.is_available()


_FOLDER_PREFIX = "ccguard-sides-"
# The child's first line: this ccguard's folder goes on its path unless it is there already (an installed or editable
# ccguard is; a source tree on the parent's sys.path may not be). -P keeps the working directory off the path.
_BOOT = ("import sys; p = sys.argv[1]; sys.path[:0] = [] if p in sys.path else [p]; "
         "from ccguard.sides import child_main; sys.exit(child_main(sys.argv[2]))")


class OutputSideProcess:
    """The output side running in a child interpreter with ``job.threads`` threads, until :meth:`result`.

    The job and the answer are JSON files in a private temporary folder, so neither side ever blocks on a pipe. Use
    as a context manager: leaving it early (an error or Ctrl-C on the input side) stops the child."""

    def __init__(self, job: OutputSideJob) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=_FOLDER_PREFIX)
        tmp = Path(self._tmp.name)
        self.input_done, self._answer = tmp / "input-done", tmp / "answer.json"
        try:
            job_path = tmp / "job.json"
            job_path.write_text(replace(job, peer_done=self.input_done, parent_pid=os.getpid()).to_json(),
                                encoding="utf-8")
            src = str(Path(__file__).resolve().parents[1])  # the folder this ccguard is imported from
            # The child sets its own threads (job.threads) before any model work.
            self._proc = subprocess.Popen([sys.executable, "-P", "-c", _BOOT, src, str(job_path)])
        except BaseException:
            self._tmp.cleanup()
            raise

    def done(self) -> bool:
        """Whether the child has exited; if it failed, its error is raised here, so the input side stops early."""
        code = self._proc.poll()
        if code not in (None, 0):
            self.result()
        return code is not None

    def result(self) -> OutputSide:
        """Tell the child that the input side has finished (it then takes every core), and wait for its answer."""
        self.input_done.touch()
        code = self._proc.wait()
        if self._answer.is_file():
            answer = json.loads(self._answer.read_text(encoding="utf-8"))
            if "error" in answer:
                raise CcguardError(answer["error"])
            return OutputSide(**answer["ok"])
        how = f"exit code {code}"
        if code < 0:
            with contextlib.suppress(ValueError):
                how = f"killed by {signal.Signals(-code).name}"
        raise RuntimeError(f"the output side's process failed ({how}); any traceback is printed above, and "
                           "`ccguard run --serial` runs that side in this process")

    def __enter__(self) -> OutputSideProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._tmp.cleanup()


def _remove_folder(inside: Path | None) -> None:
    """Remove the parent's private folder that ``inside`` is in, when the parent died without removing it (a SIGKILL
    or an out-of-memory kill of the run). Only a folder this module names is touched."""
    if inside is not None and inside.parent.name.startswith(_FOLDER_PREFIX):
        shutil.rmtree(inside.parent, ignore_errors=True)


def _exit_with_parent(folder_file: Path) -> None:
    """On Linux, have the kernel send this process SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG): no orphan
    keeps training after a SIGKILL or an out-of-memory kill of the run. Elsewhere the per-step check does it. Either
    way the orphan removes the parent's folder (``folder_file``'s) before it goes; a SIGTERM from a living parent
    (leaving :class:`OutputSideProcess` early) kills as before, and the parent removes its folder itself."""
    parent = os.getppid()

    def on_term(signum: int, frame: object) -> None:
        if os.getppid() != parent:
            _remove_folder(folder_file)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def child_main(job_path: str) -> int:
    """The child interpreter's entry point: run the job in ``job_path`` and write the answer beside it."""
    from ccguard.classifiers.backbone import torch_setup
    from ccguard.records import atomic_write_text

    path = Path(job_path)
    _exit_with_parent(path)
    job = OutputSideJob.from_json(path.read_text(encoding="utf-8"))
    if job.parent_pid and os.getppid() != job.parent_pid:
        _remove_folder(path)
        return 3  # the parent died before the line above took effect
    torch_setup()
    try:
        answer: dict[str, Any] = {"ok": asdict(output_side(job, Console(stderr=True, quiet=job.quiet)))}
    except CcguardError as e:
        answer = {"error": str(e)}
    except KeyboardInterrupt:
        return 130  # Ctrl-C reached the parent too, which reports it
    atomic_write_text(path.with_name("answer.json"), json.dumps(answer))  # NaN stays NaN, as in metrics.json
    return 0 if "ok" in answer else 2
