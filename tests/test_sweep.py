"""The sweep: its space, its study's name, a trial on tiny synthetic MNIST, pruning, resume, workers sharing the
journal, `main.py sweep` and its bad input. The same against a real PostgreSQL: tests/test_sweep_postgres.py."""

import json
from dataclasses import replace

import optuna
import pytest
import torch
from optuna.trial import FixedTrial, TrialState

import main
import runs
import sweep
import training
from mnist import Data
from recipes import RECIPES
from search_space import parse_range
from training import fit, prepare

SPACE = {"lr": ("log", 0.01, 0.3), "batch_size": [16, 128], "label_smoothing": (0.0, 0.2)}  # fast's values inside


@pytest.fixture
def tiny(mnist_dir, data_root):
    """Sweep settings for the synthetic files: 64 training images, 32 held out to judge on; 1 epoch per trial."""
    return {"recipe": "fast", "model": "net", "epochs": 1, "data": Data(mnist_dir=str(mnist_dir), root=str(data_root),
                                                                      valid_size=32, test_batch_size=16)}


@pytest.fixture
def journal(tmp_path):
    return str(tmp_path / "sweeps.journal")


@pytest.fixture
def run(capsys):
    def call(*args):
        try:
            code = main.main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
        return (code, *capsys.readouterr())

    return call


def one_error_line(err):
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# ----------------------------------------------------------------------------- the space


def test_each_form_of_a_range_is_stored_alike():
    assert parse_range("lr", ("log", 0.02, 0.5)) == {"low": 0.02, "high": 0.5, "log": True}
    assert parse_range("lr", "log:0.02:0.5") == {"low": 0.02, "high": 0.5, "log": True}
    assert parse_range("label_smoothing", (0, 0.2)) == {"low": 0.0, "high": 0.2, "log": False}
    assert parse_range("label_smoothing", "0:0.2") == {"low": 0.0, "high": 0.2, "log": False}
    assert parse_range("batch_size", "64,128,256") == {"choices": [64, 128, 256]}
    assert parse_range("batch_size", (32, 256)) == {"low": 32, "high": 256, "log": False}
    assert parse_range("nesterov", "true,false") == {"choices": [True, False]}
    assert parse_range("schedule", ["onecycle", "step"]) == {"choices": ["onecycle", "step"]}
    stored = parse_range("lr", ("log", 0.02, 0.5))
    assert parse_range("lr", json.loads(json.dumps(stored))) == stored  # read back from a study


@pytest.mark.parametrize("space, says", [
    ({"learning_rate": (0.1, 0.2)}, "unknown recipe field 'learning_rate'"),
    ({"lr": (0.5, 0.1)}, "the range 0.5..0.1 is empty"),
    ({"lr": ("log", 0.0, 0.1)}, "a log range starts above 0"),
    ({"batch_size": []}, "no choices"),
    ({"batch_size": [64, 96.5]}, "expected a whole number"),
    ({"nesterov": (0, 1)}, "give a list of choices"),
    ({"lr": "fast:slow"}, "expected a float"),
    ({"lr": (-0.1, 0.1)}, "lr must be > 0"),  # an end of the range that makes no recipe
    ({"schedule": ["onecycle", "cosine"]}, "unknown schedule 'cosine'"),
    ({}, "the space is empty"),
])
def test_a_bad_space_says_what_is_wrong(space, says):
    with pytest.raises(sweep.SweepError, match=says):
        sweep.Sweep(space)


def test_a_sweep_judges_on_a_validation_split_only():
    with pytest.raises(sweep.SweepError, match="validation split"):
        sweep.Sweep(SPACE, data=Data(valid_size=0))


def test_the_study_name_changes_with_what_it_searches_not_with_where_the_data_is():
    base = sweep.Sweep(SPACE)
    assert base.name.startswith("net-fast-")
    changed = [sweep.Sweep({**SPACE, "lr": ("log", 0.01, 0.4)}), sweep.Sweep(SPACE, recipe="s7"),
               sweep.Sweep(SPACE, model="final"), sweep.Sweep(SPACE, data=Data(valid_size=5000)),
               sweep.Sweep(SPACE, seed=2), sweep.Sweep(SPACE, epochs=1)]
    assert len({base.name, *(s.name for s in changed)}) == 1 + len(changed)
    assert sweep.Sweep(SPACE, data=Data(mnist_dir="/elsewhere", root="/tmp/x", valid_size=10_000)).name == base.name
    again = sweep.Sweep.from_description(json.loads(json.dumps(base.describe())))
    assert again == base and again.name == base.name


def test_a_recipe_judged_like_s7_takes_the_lowest_of_its_last_3_epochs():
    history = {"test_acc": [99.0, 99.5, 99.3, 99.6]}
    assert sweep.judge("s7", history) == 99.3
    assert sweep.judge("fast", history) == 99.6


# ----------------------------------------------------------------------------- a trial


def test_a_trial_trains_the_base_recipe_with_its_values_on_the_validation_split(tiny, runs_dir):
    spec = sweep.Sweep(SPACE, **tiny)
    trial = FixedTrial({"lr": 0.05, "batch_size": 16, "label_smoothing": 0.1})
    value = sweep.objective(trial, spec, torch.device("cpu"))
    (record,) = runs.list_runs()
    assert record["recipe"] == {**vars(spec.base), "lr": 0.05, "batch_size": 16, "label_smoothing": 0.1}
    assert record["data"]["valid_size"] == 32 and record["finished"] and "pruned" not in record
    assert record["trial"]["number"] == 0
    assert value == record["history"]["test_acc"][-1]  # judged on the 32 held-out images: what the run evaluated


class Pruning:
    """A trial whose pruner says stop at the first report (optuna's Trial, as far as a trial's hook uses it)."""

    def __init__(self, prune):
        self.prune, self.reports, self.user_attrs = prune, {}, {}

    def report(self, value, step):
        self.reports[step] = value

    def should_prune(self):
        return self.prune


def test_reports_to_the_pruner_change_nothing_in_the_run(tiny):
    recipe = replace(RECIPES["fast"], epochs=2, batch_size=16)
    plain = fit(prepare("net", recipe, tiny["data"], seed=3))
    looked_at = Pruning(prune=False)
    reported = fit(prepare("net", recipe, tiny["data"], seed=3),
                   on_step=sweep.reporting(looked_at, every=32, images=16))
    assert sorted(looked_at.reports) == [32, 64, 96, 128]  # every 32 of the 2 x 64 images trained on, on 16 images
    assert all(0 <= acc <= 100 for acc in looked_at.reports.values())
    assert reported == {**plain, "seconds": reported["seconds"]}  # the same run, to the last digit


class StoppedTrial(FixedTrial):
    """A trial whose pruner says stop at its first report."""

    def should_prune(self):
        return True


def test_a_pruned_trial_stops_and_its_run_says_so(tiny, monkeypatch):
    monkeypatch.setattr(sweep, "REPORT_EVERY", 40)  # reached at the 3rd step of 16 images
    with pytest.raises(optuna.TrialPruned, match="stopped after 40 training images: .*% of the first 32 validation"):
        sweep.objective(StoppedTrial({"lr": 0.05, "batch_size": 16, "label_smoothing": 0.1}),
                        sweep.Sweep(SPACE, **tiny), torch.device("cpu"))
    (record,) = runs.list_runs()
    assert record["pruned"] and not record["finished"] and record["history"] == {}  # stopped in its first epoch


def test_a_diverging_trial_is_pruned_not_a_crash(tiny):
    with pytest.raises(optuna.TrialPruned, match="loss became"):
        sweep.objective(FixedTrial({"lr": 1e6, "batch_size": 16, "label_smoothing": 0.0}),
                        sweep.Sweep({"lr": ("log", 1e-3, 1e7), "batch_size": [16], "label_smoothing": (0.0, 0.1)},
                                    **tiny), torch.device("cpu"))
    (record,) = runs.list_runs()
    assert record["pruned"]


def test_the_median_pruner_of_a_study_stops_trials_below_the_median(journal):
    study = sweep.open_study(sweep.Sweep(SPACE), journal)

    def synthetic(trial):  # trial n reports 10 * (10 - n) after each 12,800 of 128,000 images: the earlier, the better
        for step in range(12_800, 128_001, 12_800):
            trial.report(10.0 * (10 - trial.number), step)
            if trial.should_prune():
                raise optuna.TrialPruned
        return 10.0 * (10 - trial.number)

    study.optimize(synthetic, n_trials=6)
    states = [t.state for t in study.trials]
    assert states[: sweep.STARTUP_TRIALS] == [TrialState.COMPLETE] * sweep.STARTUP_TRIALS
    assert states[sweep.STARTUP_TRIALS:] == [TrialState.PRUNED] * (6 - sweep.STARTUP_TRIALS)
    assert all(sweep.WARMUP_IMAGES <= max(t.intermediate_values) < 128_000 for t in study.trials[sweep.STARTUP_TRIALS:])


# ----------------------------------------------------------------------------- studies


def test_the_base_recipe_is_trial_0_once_and_the_same_call_goes_on(tiny, journal, capsys):
    study = sweep.sweep(SPACE, 2, storage=journal, device="cpu", **tiny)
    first = study.trials[0]
    assert first.params == {"lr": 0.2, "batch_size": 128, "label_smoothing": 0.1}  # the fast recipe's own
    assert first.user_attrs["base_recipe"] == "fast"
    study = sweep.sweep(SPACE, 3, storage=journal, device="cpu", **tiny)  # again, asking for one more
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert sum("base_recipe" in t.user_attrs for t in study.trials) == 1
    assert study.trials[2].params != study.trials[1].params  # resumed, it draws anew, not the first run's draws
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    out = capsys.readouterr().out
    assert out.count("trial 0:") == 1 and "trial 2:" in out and "run " in out
    sweep.sweep(SPACE, 3, storage=journal, device="cpu", **tiny)
    assert "holds 3 finished trials already" in capsys.readouterr().out
    assert len(sweep.load_study(study.study_name, journal).trials) == 3


def test_the_trials_table_lists_every_trial_of_the_study(tiny, journal):
    sweep.sweep(SPACE, 1, storage=journal, device="cpu", **tiny)
    study = sweep.sweep(SPACE, 2, storage=journal, device="cpu", **tiny)  # a second run of the same sweep
    lines = sweep.trials_table(study).splitlines()
    assert [line.split(":")[0] for line in lines] == ["trial 0", "trial 1"]
    assert all("% in " in line and "lr=" in line and " run " in line for line in lines)


def test_a_diverging_confirmation_run_is_a_result_not_a_crash(tiny, journal, monkeypatch, capsys):
    study = sweep.sweep(SPACE, 1, storage=journal, device="cpu", **tiny)

    def fit_diverging_on_seed_2(t):
        if t.seed == 2:
            raise training.TrainingDiverged("the training loss became nan (batch 1) in epoch 1: lower the rate")
        return fit(t)

    monkeypatch.setattr(sweep, "fit", fit_diverging_on_seed_2)
    rows = sweep.confirm(study.study_name, journal, device="cpu", data=tiny["data"])
    assert [row["test_acc"][1] for row in rows] == [None, None] and all(row["mean"] is None for row in rows)
    assert all(0 <= row["test_acc"][0] <= 100 for row in rows)
    out = capsys.readouterr().out
    assert "seed 2: diverged (the training loss became nan (batch 1))" in out and out.count(" diverged") >= 4


def test_a_trial_and_its_run_name_each_other(tiny, journal):
    study = sweep.sweep(SPACE, 1, storage=journal, device="cpu", **tiny)
    (trial,) = study.trials
    record = runs.read_run(runs.get_runs_dir() / f"{trial.user_attrs['run']}.json")
    assert record["trial"] == {"study": study.study_name, "number": 0}


def test_a_changed_space_recipe_or_data_starts_another_study(tiny, journal):
    names = {sweep.sweep(SPACE, 1, storage=journal, device="cpu", **tiny).study_name,
             sweep.sweep({"lr": (0.01, 0.3)}, 1, storage=journal, device="cpu", **tiny).study_name,
             sweep.sweep(SPACE, 1, storage=journal, device="cpu", **{**tiny, "data": replace(tiny["data"],
                                                                                             valid_size=16)}).study_name}
    assert len(names) == 3
    assert len(optuna.get_all_study_names(sweep.get_storage(journal))) == 3


def test_a_study_named_for_another_sweep_is_refused(tiny, journal):
    sweep.sweep(SPACE, 1, storage=journal, study="mine", device="cpu", **tiny)
    with pytest.raises(sweep.SweepError, match="made for another sweep .its space differ"):
        sweep.sweep({"lr": (0.01, 0.3)}, 1, storage=journal, study="mine", device="cpu", **tiny)


def test_two_workers_share_the_journal(tiny, journal, capfd):
    study = sweep.sweep(SPACE, 4, workers=2, storage=journal, device="cpu", **tiny)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) >= 4  # a worker may start one more as the other finishes the 4th
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert len({t.params["lr"] for t in study.trials}) == len(numbers)  # each worker its own sampler seed
    out = capfd.readouterr().out  # the workers' lines, from their own processes
    assert "2 worker(s) on cpu, 1 thread(s) each" in out and sum(f"trial {n}: " in out for n in numbers) >= 4


# ----------------------------------------------------------------------------- main.py sweep


@pytest.fixture
def sweep_args(mnist_dir, data_root, journal):
    return ["sweep", "--data-dir", mnist_dir, "--data-root", data_root, "--valid-size", 32, "--epochs", 1,
            "--storage", journal, "--device", "cpu"]


def test_main_sweeps_then_confirms_on_the_test_set(run, sweep_args, journal):
    code, out, err = run(*sweep_args, "--space", "lr=log:0.01:0.3", "--space", "batch_size=16,32", "--trials", 2)
    assert code == 0, err
    name = sweep.load_study(optuna.get_all_study_names(sweep.get_storage(journal))[0], journal).study_name
    assert f"--confirm {name}" in out and "best: trial" in out
    code, out, err = run(*sweep_args, "--confirm", name)
    assert code == 0, err
    assert "On the test set" in out and "fast (base)" in out and "seed 3" in out
    assert out.count("on the test set") == 6  # 2 recipes x 3 seeds
    test_runs = [r for r in runs.list_runs() if r["data"]["valid_size"] == 0]
    assert len(test_runs) == 6 and {r["seed"] for r in test_runs} == {1, 2, 3}


def test_main_reads_a_space_file(run, sweep_args, tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": "log:0.01:0.3", "batch_size": [16, 32]}))
    code, out, err = run(*sweep_args, "--space-file", space, "--trials", 1)
    assert code == 0, err
    assert "trial 0: " in out


@pytest.mark.parametrize("flags, says", [
    (["--space", "momentm=0:1"], "unknown recipe field 'momentm'"),
    (["--space", "lr=0.5:0.1"], "the range 0.5..0.1 is empty"),
    (["--space", "lr"], "give FIELD=RANGE"),
    (["--space-file", "/nonexistent/space.json"], "cannot be read"),
    (["--confirm", "no-such-study"], "no study 'no-such-study'"),
])
def test_main_sweep_bad_input_is_one_line(run, sweep_args, flags, says):
    code, out, err = run(*sweep_args, *flags)
    assert code == 1 and says in one_error_line(err)


def test_an_unreachable_database_is_one_line_without_its_password(run, sweep_args):
    code, out, err = run(*sweep_args, "--storage", "postgresql+psycopg://mnist:s3cret@127.0.0.1:9/nowhere")
    line = one_error_line(err)
    assert code == 1 and "cannot use the storage postgresql+psycopg://mnist:***@127.0.0.1:9/nowhere" in line
    assert "s3cret" not in out + err


def test_main_refuses_a_study_of_another_space(run, sweep_args):
    assert run(*sweep_args, "--study", "mine", "--space", "lr=0.01:0.3", "--trials", 1)[0] == 0
    code, out, err = run(*sweep_args, "--study", "mine", "--space", "lr=0.01:0.2", "--trials", 1)
    assert code == 1 and "made for another sweep" in one_error_line(err)


def test_each_view_of_a_study_is_a_figure_and_saved(tmp_path, recwarn):
    from plots import STUDY_VIEWS, plot_study

    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("lr", 0.01, 1, log=True) + t.suggest_categorical("batch_size", [32, 64]),
                   n_trials=5)
    for view in STUDY_VIEWS:
        fig = plot_study(study, view, save=tmp_path / f"{view}.png")
        assert fig.axes and (tmp_path / f"{view}.png").stat().st_size > 0
    assert not [w for w in recwarn if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]
