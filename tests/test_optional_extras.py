"""Optional extras ([search], [cluster]) that are not installed: Hydra's start-up stays quiet and the option that
needs one is refused in one line that names the extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.argv_guard import UsageError, check_command_line

# Runs first in a fresh interpreter: `import optuna` fails there as it does without the [search] extra.
WITHOUT_OPTUNA = """
import sys
class _NoOptuna:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "optuna":
            raise ModuleNotFoundError("No module named 'optuna'", name="optuna")
sys.meta_path.insert(0, _NoOptuna())
"""


@pytest.mark.parametrize("override, extra", [
    ("hydra/sweeper=tunebench", "search"),
    ("hydra/launcher=slurm", "cluster"),
    ("hydra/launcher=local_gpus", "cluster"),
])
def test_an_option_whose_extra_is_missing_is_refused_naming_the_extra(monkeypatch, override, extra):
    for module in ("optuna", "hydra_plugins.hydra_submitit_launcher", "hydra_plugins.hydra_joblib_launcher"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UsageError, match=rf"{override}: needs the '{extra}' extra.*pip install -e '\.\[{extra}\]'"):
        check_command_line(["-m", override, "model=tiny_random"])


def run_without_optuna(code: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", WITHOUT_OPTUNA + code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_hydra_plugin_discovery_is_quiet_without_optuna():
    proc = run_without_optuna(
        "import warnings; warnings.simplefilter('error')\n"
        "from hydra.core.plugins import Plugins\n"
        "from hydra.plugins.sweeper import Sweeper\n"
        "print([p.__name__ for p in Plugins.instance().discover(Sweeper)])\n"
    )
    assert "TunebenchSweeper" in proc.stdout
    assert "incompatible" not in proc.stderr


def test_the_sweeper_without_optuna_says_which_extra_it_needs():
    proc = run_without_optuna(
        "from hydra_plugins.tunebench_sweeper.sweeper import TunebenchSweeper\n"
        "from harness.core.config import ConfigError\n"
        "try:\n"
        "    TunebenchSweeper()\n"
        "except ConfigError as exc:\n"
        "    print('refused:', exc)\n"
    )
    assert "refused: hydra/sweeper=tunebench: Optuna is not installed; pip install -e '.[search]'" in proc.stdout
