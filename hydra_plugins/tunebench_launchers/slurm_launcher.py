"""hydra/launcher=slurm's launcher: hydra-submitit-launcher's SlurmLauncher, collecting job by job.

Submission is upstream's (one job array through submitit, the same sbatch parameters). Collection is not:
upstream calls `job.results()` on each job in turn, so the first failed job raises and the rest of the sweep is
never collected (hydra #1377), a requeued job reads as finished or failed while Slurm holds it to run again,
and every poll asks sacct (a warning each time on a cluster without accounting). This one waits on Slurm's own
view of each job (harness/core/slurm_jobs.py), says once when there is no accounting, waits for requeued jobs,
and turns a job that ended without a result into an outcome the sweep summary names (and a NaN return), never
into an exception that would skip the summary.

Hydra finds launchers only in the `hydra_plugins` namespace; this module is skipped (no launcher, no warning)
where the cluster extra is not installed.
"""

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf, open_dict

from harness.core.outcome import JOB_ENDED, Outcome, read_outcome, write_outcome
from harness.core.slurm_jobs import Ended, QueuedJob, no_accounting_reason, say, wait_for

try:
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # the cluster extra is absent: conf/hydra/launcher/slurm.yaml then fails to compose, naming it
    SlurmLauncher = None

log = logging.getLogger(__name__)

if SlurmLauncher is not None:

    @dataclass
    class TunebenchSlurmConf(SlurmQueueConf):
        _target_: str = "hydra_plugins.tunebench_launchers.slurm_launcher.TunebenchSlurmLauncher"
        # Most seconds between two looks at squeue while waiting (polls start at 2 s and slow down while
        # nothing changes).
        poll_s: float = 30.0

    ConfigStore.instance().store(group="hydra/launcher", name="tunebench_slurm", node=TunebenchSlurmConf(),
                                 provider="tunebench")

    class TunebenchSlurmLauncher(SlurmLauncher):
        def __init__(self, **params: Any) -> None:
            self.poll_s = float(params.pop("poll_s", 30.0))
            super().__init__(**params)

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            import submitit  # deferred, as upstream: plugin discovery at every start stays fast

            assert self.config is not None
            jobs, numbered = self._submit(submitit, job_overrides, initial_job_idx)
            labels = _labels(job_overrides)
            queued = [QueuedJob(job.job_id, label, job.paths.result_pickle) for job, label in zip(jobs, labels)]
            array = queued[0].array_id
            say(f"submitted {len(jobs)} cell(s) to Slurm as {'job array' if len(jobs) > 1 else 'job'} {array}; "
                f"waiting for them (squeue -j {array}); job logs in {jobs[0].paths.folder.parent}")
            reason = no_accounting_reason(queued[0].job_id)
            if reason:
                say(f"this Slurm cluster keeps no job accounting ({reason}): job states are read from squeue, "
                    "which forgets a job MinJobAge (300 s by default) after it ends")
            ended = wait_for(queued, self.poll_s)
            return [self._job_return(job, end, overrides, num)
                    for job, end, (overrides, num) in zip(jobs, ended, numbered)]

        def _submit(self, submitit, job_overrides, initial_job_idx):
            """Upstream's submission, unchanged: one executor, one array, the same parameters."""
            params = self.params
            init_keys = {"max_num_timeout", "submitit_folder"}
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=params["submitit_folder"],
                                             **{f"{self._EXECUTOR}_max_num_timeout": params["max_num_timeout"]}
                                             if "max_num_timeout" in params else {})
            baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
            executor.update_parameters(**{k if k in baseparams else f"{self._EXECUTOR}_{k}": v
                                          for k, v in params.items() if k not in init_keys})
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            if "mode" in self.config.hydra.sweep:
                os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
            job_params, numbered = [], []
            for offset, overrides in enumerate(job_overrides):
                num = initial_job_idx + offset
                log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
                job_params.append((list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}",
                                   Singleton.get_state()))
                numbered.append((list(overrides), num))
            return executor.map_array(self, *zip(*job_params)), numbered

        def _job_return(self, job, end: Ended, overrides: list[str], num: int) -> JobReturn:
            """The job's own return when it has one; otherwise an outcome naming what Slurm said, and NaN."""
            result, error = _read_result(job.paths.result_pickle)
            if isinstance(result, JobReturn) and result.status == JobStatus.COMPLETED:
                return result
            if isinstance(result, JobReturn):
                error = f"{type(result._return_value).__name__}: {result._return_value}"
            job_dir, cell = self._job_dir_and_cell(overrides, num)
            if read_outcome(job_dir) is None:
                detail = f"Slurm job {end.job.job_id} ended {end.state}"
                detail += f" ({end.detail})" if end.detail else ""
                detail += f"; {error}" if error else ", with no result"
                detail += f"; log: {job.paths.stderr}"
                write_outcome(job_dir, Outcome(JOB_ENDED, cell, detail=detail, objective=math.nan))
            ret = JobReturn(overrides=overrides, working_dir=str(job_dir), status=JobStatus.COMPLETED)
            ret.return_value = math.nan
            return ret

        def _job_dir_and_cell(self, overrides: list[str], num: int) -> tuple[Path, str]:
            try:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
                with open_dict(cfg.hydra.job):
                    cfg.hydra.job.num = num
                folder = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
                return folder, f"{cfg.model.name}/{cfg.method.name}"
            except Exception as exc:  # the summary still counts the job, under its overrides
                log.warning("could not compose job %d's config (%s: %s)", num, type(exc).__name__, exc)
                return Path(str(self.config.hydra.sweep.dir)) / str(num), " ".join(filter_overrides(overrides))


def _labels(job_overrides: Sequence[Sequence[str]]) -> list[str]:
    """Each job's overrides that differ between jobs: what sets it apart in a message ("" for a lone job)."""
    if len(job_overrides) < 2:
        return [""] * len(job_overrides)
    common = set.intersection(*(set(o) for o in job_overrides))
    labels = []
    for overrides in job_overrides:
        labels.append(" ".join(o for o in filter_overrides(overrides) if o not in common))
    return labels


def _read_result(path: Path) -> tuple[object | None, str | None]:
    """submitit's result pickle: (the task's return, None), (None, the error's last line), or (None, None)."""
    from submitit.core.utils import pickle_load  # deferred, as upstream

    try:
        outcome, value = pickle_load(path)
    except FileNotFoundError:
        return None, None
    except Exception as exc:  # torn or unreadable: say so, collect the rest
        return None, f"its result file is unreadable ({type(exc).__name__}: {exc})"
    if outcome == "success":
        return value, None
    last = [line for line in str(value).strip().splitlines() if line.strip()]
    return None, last[-1] if last else "the job raised"
