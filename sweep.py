"""Sweep: find a recipe with Optuna. A study searches a space of `Recipe` fields laid over a named recipe and model;
each trial is one run (`prepare` + `fit`, kept in runs/ like any other) judged on the validation split, never on the
test set. `confirm` then trains the best trial's recipe and the base recipe on 3 seeds, on the test set.

    space = {"lr": ("log", 0.02, 0.5), "batch_size": [64, 128, 256], "label_smoothing": (0.0, 0.2)}
    study = sweep(space, trials=12)        # a journal file in runs/: run it again and the study goes on
    sweep(space, 12, workers=2)            # two processes on this machine, sharing its cores and the journal
    sweep(space, 12, storage="postgresql+psycopg://user:password@host/db")   # workers on several machines
    confirm(study.study_name)

Optuna is imported here only, when a sweep runs: training, the S5 and S7 notebooks and the GPU runs need none of it.
"""

import contextlib
import hashlib
import io
import json
import math
import multiprocessing
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from itertools import islice
from pathlib import Path

import torch

import runs
from devices import capture_rng, device_name, get_device, restore_rng
from files import one_line, why_unwritable
from mnist import Data
from model import MODELS
from recipes import RECIPES
from search_space import DEFAULT_SPACE, SweepError, in_space, parse_range, suggest
from training import TrainingDiverged, evaluate, fit, prepare, start_run

VALID_SIZE = 10_000  # the last 10,000 training images: what a trial is judged on
REPORT_EVERY = 12_800  # training images between two reports to the pruner (100 steps of 128), ...
REPORT_IMAGES = 1_000  # ... each on the first 1,000 validation images: a quick look, not the judgement
STARTUP_TRIALS = 3  # trials that run to the end before the pruner stops any (the base recipe is the first)
WARMUP_IMAGES = 25_600  # images every trial trains on before it may be stopped: the first reports say little
HEARTBEAT = 60  # seconds between a worker's signs of life in a database; silent for twice that, its trial is failed
RETRIES = 2  # ... and tried again, at most this many times
JOURNAL = "sweeps.journal"  # the default storage: one file in the runs folder, for every study
SEEDS = (1, 2, 3)  # of the confirmation on the test set
LAST_3 = ("s7",)  # recipes judged, like the S7 target, by the lowest of their last 3 epochs; others by the last


# ----------------------------------------------------------------------------- what a study is


@dataclass(frozen=True)
class Sweep:
    """What a study searches and how its trials are judged. The study's name is derived from all of it, so that
    changing any of it (the space, the base recipe, the model, the data, the seed, the budget) starts another."""

    space: dict  # {recipe field: ("log", low, high) | (low, high) | [choice, ...]}
    recipe: str = "fast"  # the named recipe the space is laid over, tried as it is first (trial 0)
    model: str = "net"  # a name in model.MODELS
    data: Data = Data(valid_size=VALID_SIZE)  # trials train on the rest and are judged on the valid_size held out
    seed: int = 1  # of every trial: one seed, so that the trials differ by their recipes only
    epochs: int = 0  # each trial's budget in epochs (0: the recipe's)

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise SweepError(f"unknown recipe {self.recipe!r}: use one of {', '.join(RECIPES)}")
        if self.model not in MODELS:
            raise SweepError(f"unknown model {self.model!r}: use one of {', '.join(sorted(MODELS))}")
        if not self.data.valid_size:
            raise SweepError("a sweep judges its trials on a validation split: give a valid_size > 0")
        if not self.space:
            raise SweepError("the space is empty: give at least one recipe field to search")
        object.__setattr__(self, "space", {name: parse_range(name, spec) for name, spec in self.space.items()})
        for name, r in self.space.items():  # each end of each range must make a recipe that trains
            for value in r.get("choices") or (r["low"], r["high"]):
                try:
                    replace(self.base, **{name: value})
                except ValueError as e:
                    raise SweepError(f"the space's {name}: {e}") from None

    @property
    def base(self):
        """The base recipe, with the sweep's budget."""
        return replace(RECIPES[self.recipe], **({"epochs": self.epochs} if self.epochs else {}))

    def describe(self):
        """What the study is, as plain values: kept in the study, compared on resume, read back by `confirm`."""
        sizes = {"train_size": self.data.train_size, "test_size": self.data.test_size,
                 "valid_size": self.data.valid_size}
        return {"space": self.space, "recipe": self.recipe, "base": asdict(self.base), "model": self.model,
                "data": sizes, "seed": self.seed, "epochs": self.epochs}

    @classmethod
    def from_description(cls, d, data=Data()):
        """The sweep `describe` wrote, its data read from where `data` says."""
        return cls(d["space"], d["recipe"], d["model"], replace(data, **d["data"]), d["seed"], d["epochs"])

    @property
    def name(self):
        """'net-fast-3f2a9c1e': model, base recipe and a digest of everything that defines the study."""
        digest = hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.model}-{self.recipe}-{digest}"


def judge(recipe_name, history):
    """A trial's value: its validation accuracy at the end, or the lowest of its last 3 epochs for a recipe judged
    like S7's target."""
    acc = history["test_acc"]
    return min(acc[-3:]) if recipe_name in LAST_3 else acc[-1]


# ----------------------------------------------------------------------------- Optuna


def import_optuna():
    try:
        import optuna
    except ModuleNotFoundError:
        raise SweepError("a sweep needs Optuna: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def get_storage(storage=None, heartbeat=HEARTBEAT):
    """Where the studies live: a journal file (by default runs/sweeps.journal; several processes on this machine may
    share it), or a database URL (postgresql+psycopg://user:password@host/db) for workers on several machines, with
    a heartbeat: the trial of a worker silent for 2 x `heartbeat` seconds is failed and tried again."""
    optuna = import_optuna()
    if storage is None or "://" not in str(storage):
        path = Path(storage) if storage else runs.get_runs_dir() / JOURNAL
        problem = why_unwritable(path)
        if problem:
            raise SweepError(f"the sweep's journal {path} {problem}: give --storage a file that can be written")
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    try:
        return optuna.storages.RDBStorage(
            storage, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=heartbeat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=RETRIES))
    except Exception as e:  # the driver's and the server's errors: any of them means this storage cannot be used
        raise SweepError(f"cannot use the storage {shown(storage)}: {one_line(e)}") from None


def shown(storage):
    """The storage as it may be printed: a database URL without its password."""
    if storage is None or "://" not in str(storage):
        return str(storage or runs.get_runs_dir() / JOURNAL)
    from sqlalchemy.engine import make_url  # Optuna's own dependency

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: say only its scheme
        return str(storage).split("://")[0] + "://..."


def open_study(sweep, storage=None, worker=0, name=None, heartbeat=HEARTBEAT):
    """The study of `sweep` (created, or loaded to go on), with a sampler seeded per worker and the median pruner.
    A study of that name made for another sweep is a SweepError."""
    optuna = import_optuna()
    name = name or sweep.name
    try:
        study = optuna.create_study(
            study_name=name, storage=get_storage(storage, heartbeat), direction="maximize", load_if_exists=True,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=WARMUP_IMAGES))
    except SweepError:
        raise
    except Exception as e:
        raise SweepError(f"cannot open the study {name!r} in {shown(storage)}: {one_line(e)}") from None
    # Seeded per worker and by the trials the study holds: the same command from scratch draws the same trials,
    # and a resumed study draws new ones (the same seed again would repeat the first run's draws).
    study.sampler = optuna.samplers.TPESampler(seed=sweep.seed + worker + 1000 * len(study.trials))
    held, wanted = study.user_attrs.get("sweep"), json.loads(json.dumps(sweep.describe()))  # as the storage keeps it
    if held is None:
        study.set_user_attr("sweep", wanted)
    elif held != wanted:
        differ = ", ".join(key for key in held if held[key] != wanted.get(key))
        raise SweepError(f"the study {name!r} was made for another sweep (its {differ} differ): leave out the "
                         "study's name to start a new one")
    return study


def load_study(name, storage=None):
    optuna = import_optuna()
    try:
        return optuna.load_study(study_name=name, storage=get_storage(storage))
    except KeyError:
        names = optuna.get_all_study_names(get_storage(storage))
        raise SweepError(f"no study {name!r} in {shown(storage)}: "
                         + (f"it holds {', '.join(names)}" if names else "it holds none yet")) from None


def finished(study):
    """The trials that count toward a sweep's number: completed or pruned (a failed one is tried again)."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


# ----------------------------------------------------------------------------- a trial


def objective(trial, sweep, device):
    """One trial: the base recipe with the trial's values, trained from `sweep.seed` and judged on the validation
    split; its run is kept in runs/, naming the trial (and the trial its run). Stopped by the pruner, or by a
    diverging loss: pruned, and its run marked so."""
    optuna = import_optuna()
    recipe = replace(sweep.base, **suggest(trial, sweep.space))
    t = prepare(sweep.model, recipe, sweep.data, device, sweep.seed)
    t.run_file = start_run(t)
    if t.run_file is not None:
        study = getattr(trial, "study", None)  # None for a FixedTrial (a trial outside any study)
        runs.mark_run(t.run_file, trial={"study": study and study.study_name, "number": trial.number})
        trial.set_user_attr("run", t.run_file.stem)
    start = time.perf_counter()
    try:
        with quiet():
            history = fit(t, on_step=reporting(trial, REPORT_EVERY, REPORT_IMAGES))
    except (optuna.TrialPruned, TrainingDiverged) as e:
        if t.run_file is not None:
            runs.mark_run(t.run_file, pruned=True)
        if isinstance(e, TrainingDiverged):
            trial.set_user_attr("diverged", divergence(e))
            raise optuna.TrialPruned(str(e)) from None
        raise
    finally:
        trial.set_user_attr("minutes", (time.perf_counter() - start) / 60)
    if len(history["test_acc"]) < recipe.epochs:  # fit stopped on Ctrl-C: so does the sweep
        raise KeyboardInterrupt
    return judge(sweep.recipe, history)


def divergence(error):
    """'the training loss became inf (batch 90)': a TrainingDiverged's what and where, without fit's advice."""
    return str(error).split(" in epoch")[0]


def reporting(trial, every, images):
    """A training step's hook that, each time the trial has trained on `every` more images, reports the accuracy on
    the first `images` validation images to the pruner, keyed by the images trained on (so that trials with other
    batch sizes are compared at the same point), and stops the trial (optuna.TrialPruned) if the pruner says so.
    The look changes nothing in the run: the random generators are put back, the model back into training mode."""
    import optuna

    seen = 0

    def on_step(t, batch):
        nonlocal seen
        before, seen = seen, seen + batch
        if seen // every == before // every:
            return
        point = seen // every * every
        state = capture_rng()
        _, correct, looked = evaluate(t, islice(t.test_loader, math.ceil(images / t.data.test_batch_size)))
        restore_rng(state)
        t.model.train()
        trial.report(100 * correct / looked, point)
        if trial.should_prune():
            raise optuna.TrialPruned(f"stopped after {point:,} training images: {100 * correct / looked:.2f}% of "
                                     f"the first {looked:,} validation images")

    return on_step


@contextlib.contextmanager
def quiet():
    """A trial's training prints nothing (its progress, its epochs: the run's record has them), so that a sweep
    prints one line per trial; its warnings still reach stderr."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            yield
    finally:
        for line in err.getvalue().splitlines():
            if line.startswith("warning:"):
                print(line, file=sys.stderr)


def trial_line(study, trial):
    """One line of ours per trial as it ends (Optuna logs at WARNING only)."""
    print(describe_trial(trial), flush=True)


def describe_trial(trial):
    """'trial 3: 99.24% in 5.6 min  lr=0.131  batch_size=32  run NAME': how it ended, its values, its run."""
    from optuna.trial import TrialState

    values = values_text(trial.params, "  ")
    last = trial.intermediate_values
    pruned = trial.state == TrialState.PRUNED and last
    what = (f"{trial.value:.2f}%" if trial.state == TrialState.COMPLETE else
            "diverged" if "diverged" in trial.user_attrs else
            f"pruned after {max(last):,} images ({last[max(last)]:.2f}%)" if pruned else
            "stopped (Ctrl-C, or a worker that died)" if trial.state == TrialState.FAIL else trial.state.name.lower())
    run = trial.user_attrs.get("run")
    return (f"trial {trial.number}: {what} in {trial.user_attrs.get('minutes', 0.0):.1f} min  {values}"
            + (f"  run {run}" if run else ""))


def values_text(values, sep=", "):
    """'lr=0.0785, label_smoothing=0.116': recipe values as a trial line or a table prints them."""
    return sep.join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def trials_table(study):
    """Every trial of the study, whoever ran it and when (other workers, earlier runs of the same sweep)."""
    return "\n".join(describe_trial(trial) for trial in study.get_trials(deepcopy=False))


# ----------------------------------------------------------------------------- running a sweep


def sweep(space=None, trials=12, *, workers=1, storage=None, study=None, device="auto", heartbeat=HEARTBEAT,
          **settings):
    """Run the study of `space` (default DEFAULT_SPACE) over `settings` (`Sweep`'s fields: recipe, model, data,
    seed, epochs) until it holds `trials` finished trials; returns the study. Run again, it goes on where it
    stopped. `workers` processes share this machine's cores; `storage`: see `get_storage`; `study`: a name of
    your own in place of the derived one."""
    import_optuna()
    spec = Sweep(DEFAULT_SPACE if space is None else space, **settings)
    name = study or spec.name
    held = open_study(spec, storage, name=name, heartbeat=heartbeat)
    base = {field: getattr(spec.base, field) for field in spec.space}
    if in_space(base, spec.space):
        held.enqueue_trial(base, user_attrs={"base_recipe": spec.recipe}, skip_if_exists=True)
    else:
        print(f"the {spec.recipe} recipe's {base} lies outside the space: it is not tried first")
    left = trials - len(finished(held))
    if left <= 0:
        print(f"study {name} holds {len(finished(held))} finished trials already: ask for more to go on")
        return held
    if workers < 1:
        raise SweepError(f"workers must be >= 1, got {workers}")
    threads = max(1, torch.get_num_threads() // workers)
    where = device_name(get_device(device)) if workers == 1 else f"{get_device(device).type}, {threads} thread(s) each"
    print(f"study {name}: {left} more trial(s) of {trials}, {workers} worker(s) on {where}; storage {shown(storage)}",
          flush=True)
    job = (spec, storage, name, trials, device, heartbeat)
    if workers == 1:
        work(*job, worker=0)
    else:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no torch state crosses a fork
        processes = [context.Process(target=work, args=job, kwargs={"worker": w, "threads": threads})
                     for w in range(workers)]
        for p in processes:
            p.start()
        for p in processes:
            p.join()
        stopped = [w for w, p in enumerate(processes) if p.exitcode]
        if stopped:
            raise SweepError(f"worker(s) {', '.join(map(str, stopped))} stopped early (exit code "
                             f"{processes[stopped[0]].exitcode}); run the same command again to go on")
    return load_study(name, storage)


def work(spec, storage, name, trials, device, heartbeat, worker=0, threads=None):
    """One worker: trials of the study until it holds `trials` finished ones (counting every worker's)."""
    import_optuna()
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    if threads:
        torch.set_num_threads(threads)
    study = open_study(spec, storage, worker, name, heartbeat)
    left = trials - len(finished(study))
    if left > 0:
        device = get_device(device)
        study.optimize(lambda trial: objective(trial, spec, device), n_trials=left, gc_after_trial=True,
                       callbacks=[MaxTrialsCallback(trials, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                                  trial_line])


def best_recipe(study):
    """The best completed trial's recipe: its values laid over the study's base recipe."""
    spec = Sweep.from_description(study.user_attrs["sweep"])
    try:
        best = study.best_trial
    except ValueError:
        raise SweepError(f"the study {study.study_name!r} has no finished trial yet: run the sweep first") from None
    return replace(spec.base, **best.params), best


# ----------------------------------------------------------------------------- confirming on the test set


def confirm(name, storage=None, seeds=SEEDS, device="auto", data=Data()):
    """The best trial's recipe beside the base recipe, each trained on `seeds` (all training images, validation ones
    included) and judged on the test set, once. Prints the table; returns its rows."""
    study = load_study(name, storage)
    spec = Sweep.from_description(study.user_attrs["sweep"], data)
    best, trial = best_recipe(study)
    device = get_device(device)
    test_data = replace(spec.data, valid_size=0)
    rows = []
    for label, recipe in ((f"{spec.recipe} (base)", spec.base), (f"trial {trial.number}", best)):
        accs, minutes = [], 0.0
        for seed in seeds:
            t = prepare(spec.model, recipe, test_data, device, seed)
            try:
                with quiet():
                    fit(t)
                accs.append(judge(spec.recipe, t.history))
                print(f"{label}, seed {seed}: {accs[-1]:.2f}% on the test set", flush=True)
            except TrainingDiverged as e:  # a result too: this recipe does not train on this seed
                accs.append(None)
                print(f"{label}, seed {seed}: diverged ({divergence(e)})", flush=True)
            minutes += sum(t.history["seconds"]) / 60
        changes = {k: v for k, v in asdict(recipe).items() if asdict(spec.base)[k] != v}
        rows.append({"recipe": label, "changes": changes, "test_acc": accs, "minutes": minutes / len(seeds),
                     "mean": None if None in accs else sum(accs) / len(accs)})
    print(confirmation_table(rows, seeds, spec.recipe in LAST_3))
    return rows


def percent(acc):
    return f"{'diverged':>9}" if acc is None else f"{acc:>8.2f}%"


def confirmation_table(rows, seeds, last_3=False):
    measure = "lowest of the last 3 epochs" if last_3 else "test accuracy at the end"
    header = f"{'recipe':<16}" + "".join(f"{'seed ' + str(s):>9}" for s in seeds) + f"{'mean':>9}{'min/run':>9}"
    lines = [f"On the test set ({measure}):", header]
    for r in rows:
        lines.append(f"{r['recipe']:<16}" + "".join(percent(a) for a in [*r["test_acc"], r["mean"]])
                     + f"{r['minutes']:>9.1f}")
    for r in rows:
        if r["changes"]:
            lines.append(f"{r['recipe']}: " + values_text(r["changes"]))
    return "\n".join(lines)
