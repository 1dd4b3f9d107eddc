"""Engine threads are sized from the cores a process is given and the workers on the host."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from daguerre.worker.threads import HostWorkers, ThreadBudget, choose_wait_policy, cores_given
from support.helpers import make_worker, subprocess_env

REGISTER_AND_WAIT = """
import sys, time
from pathlib import Path
from daguerre.worker.threads import HostWorkers
with HostWorkers(Path(sys.argv[1]), int(sys.argv[2])):
    print("registered", flush=True)
    time.sleep(60)
"""


def register_elsewhere(directory, count):
    process = subprocess.Popen(
        [sys.executable, "-c", REGISTER_AND_WAIT, str(directory), str(count)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "registered"
    return process


def stop(process):
    process.kill()
    process.wait()
    assert process.stdout is not None
    process.stdout.close()


def test_every_live_process_s_workers_are_counted_and_dead_ones_forgotten(tmp_path):
    with HostWorkers(tmp_path, 1) as here:
        assert here.total() == 1
        other = register_elsewhere(tmp_path, 2)
        try:
            assert here.total() == 3
        finally:
            stop(other)
        assert here.total() == 1  # the killed process's lock went with it
        assert sorted(p.name for p in tmp_path.iterdir()) == [f"{here._path.name}"]
    assert list(tmp_path.iterdir()) == []  # a clean exit removes its own file


@pytest.mark.parametrize(
    ("cores", "others", "expected"),
    [(2, 0, 2), (2, 1, 1), (16, 3, 4), (2, 5, 1), (3, 1, 1)],
)
def test_each_worker_gets_its_share_of_the_cores(tmp_path, cores, others, expected):
    processes = [register_elsewhere(tmp_path, 1) for _ in range(others)]
    try:
        with HostWorkers(tmp_path, 1) as host:
            assert ThreadBudget(host, cores=cores).threads() == expected
            assert ThreadBudget(host, explicit=7, cores=cores).threads() == 7  # engine_threads wins
    finally:
        for process in processes:
            stop(process)


def test_the_budget_follows_workers_that_come_and_go(tmp_path, monkeypatch):
    monkeypatch.setattr("daguerre.worker.threads.REFRESH_S", 0.0)
    with HostWorkers(tmp_path, 1) as host:
        budget = ThreadBudget(host, cores=2)
        assert budget.threads() == 2
        other = register_elsewhere(tmp_path, 1)
        assert budget.threads() == 1
        stop(other)
        time.sleep(0.05)
        assert budget.threads() == 2


def test_cores_given_follows_the_affinity_mask():
    script = "from daguerre.worker.threads import cores_given; print(cores_given())"
    pinned = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", script],
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.strip() == "1"
    assert cores_given() >= 1


def test_a_worker_sets_torch_s_threads_before_its_engine_runs(settings, store, blobs, client, auth, tmp_path):
    import torch

    before = torch.get_num_threads()
    worker = make_worker(settings, store, blobs)
    worker.threads = ThreadBudget(None, explicit=1)
    try:
        client.post("/v1/generations", json={"prompt": "x"}, headers=auth)
        assert worker.run_once().failure_code is None
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("engine_threads", "workers", "cores", "policy"),
    [(None, 1, 2, None), (None, 8, 2, None), (2, 1, 2, None), (2, 2, 2, "PASSIVE"), (4, 1, 2, "PASSIVE")],
)
def test_openmp_waits_passively_only_when_engine_threads_oversubscribe(
    monkeypatch, engine_threads, workers, cores, policy
):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    choose_wait_policy(engine_threads, workers, cores)
    assert os.environ.get("OMP_WAIT_POLICY") == policy


def test_a_wait_policy_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    choose_wait_policy(16, 4, 2)
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
