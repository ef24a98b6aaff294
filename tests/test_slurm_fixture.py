"""Where no Slurm test cluster can start, the Slurm tests say why: skipped on a developer's machine, failed under
CI. Checked by running pytest on tests/test_slurm.py in a process that believes it is not root (a plugin that
replaces os.geteuid), so no cluster is started and nothing needs root."""

import os
import subprocess
import sys

import pytest
import slurm_cluster
from conftest import REPO

PLUGIN = "import os\nos.geteuid = lambda: 1000\n"


@pytest.mark.parametrize("ci, expected", [("", "1 skipped"), ("1", "1 error")], ids=["developer", "ci"])
def test_without_root_the_slurm_tests_skip_saying_why_and_fail_under_ci(tmp_path, ci, expected):
    (tmp_path / "not_root.py").write_text(PLUGIN)
    env = {**os.environ, "CI": ci, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "not_root", "-p", "no:cacheprovider",
                           "-m", "slow or not slow", "-k", "array_parallelism", f"--basetemp={tmp_path / 'run'}",
                           "tests/test_slurm.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert expected in out and done.returncode == (0 if not ci else 1), out[-3000:]
    assert "starting slurmctld and slurmd needs root" in out and "run the Slurm tests as root" in out
    if ci:
        assert "CI=1 needs the Slurm test cluster" in out and "Traceback" not in out


def test_why_not_names_what_is_missing_and_how_to_get_it(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(slurm_cluster, "missing_binaries", lambda: ["slurmctld", "sbatch"])
    monkeypatch.setattr(slurm_cluster.shutil, "which", lambda name, **kw: None)
    assert slurm_cluster.why_not() == ("Slurm is not installed (slurmctld, sbatch missing) and there is no apt-get: "
                                       "install slurm-wlm munge yourself")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert slurm_cluster.install_packages() == ("Slurm is not installed (slurmctld, sbatch missing) and installing it "
                                                "needs root: apt-get install slurm-wlm munge (or make slurm)")
