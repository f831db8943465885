"""The sweep against a real PostgreSQL, as workers on several machines use it: two worker processes sharing one
study, and a worker killed in the middle of a trial, whose trial the heartbeat fails and a later worker tries again.

`make postgres` (as root on Debian) installs, starts and prepares a local server and prints SWEEP_POSTGRES_URL to
export; `.ci/run` does the same. Without that variable these tests are skipped, saying so; with REQUIRE_POSTGRES=1
(CI) they fail instead.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.postgres

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

import sweep  # noqa: E402
from mnist import Data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"lr": ("log", 0.01, 0.3), "batch_size": [16, 128]}


@pytest.fixture
def database():
    """The URL of an empty database on a running PostgreSQL (SWEEP_POSTGRES_URL); emptied again afterwards."""
    url = os.environ.get("SWEEP_POSTGRES_URL")
    if not url:
        (pytest.fail if os.environ.get("REQUIRE_POSTGRES") == "1" else pytest.skip)(
            "the PostgreSQL tests need SWEEP_POSTGRES_URL (run `make postgres` as root, then export what it prints)")
    from sqlalchemy import create_engine, text

    def empty():
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()

    empty()
    yield url
    empty()


@pytest.fixture
def tiny(mnist_dir, data_root):
    return {"recipe": "fast", "model": "net", "epochs": 1,
            "data": Data(mnist_dir=str(mnist_dir), root=str(data_root), valid_size=32, test_batch_size=16)}


def test_two_workers_share_a_study_in_postgresql(database, tiny, capsys):
    study = sweep.sweep(SPACE, 4, workers=2, storage=database, device="cpu", **tiny)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) >= 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert study.trials[0].user_attrs["base_recipe"] == "fast"
    out = capsys.readouterr().out
    assert "storage postgresql+psycopg://" in out and password(database) not in out


def password(url):
    from sqlalchemy.engine import make_url

    return make_url(url).password


def worker(database, mnist_dir, data_root, tmp_path):
    """`main.py sweep` as a worker on another machine would start it, on the synthetic files, with a 1-second
    heartbeat: 2 trials of 60 epochs (a few seconds each: long enough to be killed in the middle of one)."""
    return subprocess.Popen(
        [sys.executable, "main.py", "sweep", "--storage", database, "--study", "killed", "--heartbeat", "1",
         "--space", "lr=log:0.01:0.3", "--trials", "2", "--epochs", "60", "--device", "cpu",
         "--data-dir", str(mnist_dir), "--data-root", str(data_root), "--valid-size", "32"],
        cwd=ROOT, env={**os.environ, "RUNS_DIR": str(tmp_path / "runs")}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def test_a_killed_workers_trial_is_failed_by_the_heartbeat_and_tried_again(database, mnist_dir, data_root, tmp_path):
    storage = sweep.get_storage(database, heartbeat=1)
    doomed = worker(database, mnist_dir, data_root, tmp_path)
    deadline = time.monotonic() + 120
    while not [t for t in running_trials(storage) if "run" in t.user_attrs]:  # training: its values drawn
        assert doomed.poll() is None and time.monotonic() < deadline, doomed.communicate()[0]
        time.sleep(0.2)
    doomed.send_signal(signal.SIGKILL)  # no goodbye: its trial stays RUNNING in the database
    doomed.wait()
    (killed,) = running_trials(storage)
    time.sleep(3)  # past the grace period (2 heartbeats) with no heartbeat
    survivor = worker(database, mnist_dir, data_root, tmp_path)
    out, _ = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, out
    trials = optuna.load_study(study_name="killed", storage=storage).trials
    assert trials[killed.number].state == TrialState.FAIL
    (retried,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retried.state == TrialState.COMPLETE and retried.params == killed.params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2


def running_trials(storage):
    try:
        study = optuna.load_study(study_name="killed", storage=storage)
    except KeyError:  # not created yet
        return []
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def test_postgres_script_starts_a_stopped_server_and_returns(database):
    """`$(bash tests/postgres.sh)` returns once the server runs: the server must not keep the caller's pipe open
    (started holding it, it left CI waiting for the URL until its time ran out)."""
    if os.geteuid() != 0:
        pytest.skip("stopping and starting the server needs root")
    version, cluster = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                                      check=True).stdout.split()[:2]
    subprocess.run(["pg_ctlcluster", version, cluster, "stop"], check=True)
    try:
        done = subprocess.run(["bash", str(ROOT / "tests" / "postgres.sh")], capture_output=True, text=True,
                              timeout=120)
    except subprocess.TimeoutExpired:
        subprocess.run(["pg_ctlcluster", version, cluster, "start"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
        pytest.fail("tests/postgres.sh started the server but did not return: the server holds its stdout")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == database
