"""A real single-node Slurm cluster for the tests: Debian's slurm-wlm and munge, one slurm.conf in a temporary
folder, and the three daemons (munged, slurmctld, slurmd) started in the foreground as children of the test
process, so that stopping them stops exactly what was started and nothing the machine ran before.

Nothing here touches /etc: the munge key, socket and seed, slurm.conf, the spool and state folders and the logs
all live in the temporary folder; client commands (sbatch, squeue, scontrol) find the cluster through SLURM_CONF.
The ports are free ones picked at start, so a second cluster (another checkout's tests) can run beside it.

Slurm runs its jobs as the user who submits them and its daemons as root: without root, or without the packages
and apt to install them, `why_not()` says why and the tests skip (under CI=1 they fail instead).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
# What each daemon binary comes from, to know whether the packages are there.
BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")
PARTITION = "debug"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _which(name: str) -> str | None:
    # The daemons live in /usr/sbin, which a non-login PATH may lack.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if _which(b) is None]


def install_packages() -> str | None:
    """Install slurm-wlm and munge with apt when they are absent; None when they are there, else why not."""
    if not missing_binaries():
        return None
    if os.geteuid() != 0:
        return (f"Slurm is not installed ({', '.join(missing_binaries())} missing) and installing it needs root: "
                f"apt-get install {' '.join(PACKAGES)} (or make slurm)")
    if shutil.which("apt-get") is None:
        return (f"Slurm is not installed ({', '.join(missing_binaries())} missing) and there is no apt-get: "
                f"install {' '.join(PACKAGES)} yourself")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {(done.stderr or done.stdout).strip()[-400:]}"
    missing = missing_binaries()
    return f"installed {' '.join(PACKAGES)}, yet {', '.join(missing)} missing" if missing else None


def why_not() -> str | None:
    """Why a cluster cannot be started here (None: it can)."""
    if os.geteuid() != 0:
        return ("starting slurmctld and slurmd needs root (they run jobs as the submitting user): run the Slurm "
                "tests as root")
    return install_packages()


def _die_with_parent() -> None:
    """In the daemon's process before it starts: SIGTERM it when the test process dies, however it dies (SIGKILL
    included), so that no daemon outlives the tests that started it. Linux's PR_SET_PDEATHSIG."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> dict[str, str]:
    """`slurmd -C`'s view of this machine: CPUs, Boards, SocketsPerBoard, CoresPerSocket, ThreadsPerCore,
    RealMemory (MB)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True, timeout=60).stdout
    first = out.splitlines()[0]
    fields = dict(part.split("=", 1) for part in first.split() if "=" in part)
    return {k: v for k, v in fields.items() if k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket",
                                                      "ThreadsPerCore", "RealMemory")}


@dataclass
class SlurmCluster:
    root: Path
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    hardware: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """What a client command needs to reach this cluster (added to the caller's environment)."""
        return {"SLURM_CONF": str(self.conf)}

    @property
    def cpus(self) -> int:
        return int(self.hardware["CPUs"])

    def write_config(self) -> None:
        for sub in ("munge", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(self.root / sub, 0o700)
        self.hardware = node_hardware()
        node_line = " ".join(f"{k}={v}" for k, v in self.hardware.items())
        self.conf.write_text("\n".join([
            "# Written by tests/slurm_cluster.py: one node, this machine; no accounting (as on many small clusters).",
            "ClusterName=tunebench-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            f"AuthInfo=socket={self.munge_socket}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            # No cgroups in a container: processes are tracked by their parent ids.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            "ReturnToService=2",
            # Seconds between SIGTERM and SIGKILL when a job is cancelled, requeued or reaches its time limit.
            "KillWait=20",
            # Finished jobs stay visible to squeue for this long (the launcher reads their final state there).
            "MinJobAge=600",
            "JobRequeue=1",
            "SlurmdTimeout=300",
            f"NodeName={self.node} NodeAddr=127.0.0.1 {node_line} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def _start(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115  (held by the daemon for its life)
        self.processes[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                env={**os.environ, **self.env}, start_new_session=True,
                                                preexec_fn=_die_with_parent)

    def start(self, timeout_s: float = 120) -> None:
        self.write_config()
        key = self.root / "munge" / "munge.key"
        subprocess.run([_which("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True, timeout=60)
        os.chmod(key, 0o600)
        self._start("munged", [_which("munged"), "--foreground", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                               f"--seed-file={self.root / 'munge' / 'munged.seed'}",
                               f"--log-file={self.root / 'log' / 'munged.log'}"])
        self._wait(lambda: self.munge_socket.exists(), "munged's socket", 30)
        self._start("slurmctld", [_which("slurmctld"), "-D", "-c", "-f", str(self.conf)])
        self._start("slurmd", [_which("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)])
        self._wait(self.node_idle, f"node {self.node} idle in sinfo", timeout_s)

    def _wait(self, ready, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}:\n"
                                       + self.log_tail())
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}:\n" + self.log_tail())

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster; with `check`, a failure names the command and its error."""
        done = subprocess.run([_which(args[0]) or args[0], *args[1:]], capture_output=True, text=True,
                              env={**os.environ, **self.env}, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"`{' '.join(args)}` exited {done.returncode}: {(done.stderr or done.stdout).strip()}")
        return done

    def node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout.split()
        return out[:2] == [self.node, "idle"]

    def jobs(self) -> dict[str, str]:
        """Every job Slurm still knows (pending, running, and finished ones younger than MinJobAge): id → state."""
        out = self.run("squeue", "-h", "-r", "-t", "all", "-o", "%i %T", check=False).stdout
        return dict(line.split()[:2] for line in out.splitlines() if line.strip())

    def running(self) -> list[str]:
        return [job for job, state in self.jobs().items() if state == "RUNNING"]

    def cancel_all(self, timeout_s: float = 120) -> None:
        """Cancel every job and wait until none is pending, running or completing: the next test starts on an
        idle node."""
        self.run("scancel", "--full", "-u", str(os.getuid()), check=False)
        busy = ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED", "SUSPENDED", "SIGNALING")
        self._wait(lambda: not any(s in busy for s in self.jobs().values()) and self.node_idle(),
                   "every job to end", timeout_s)

    def stop(self) -> None:
        """Stop the daemons this object started (slurmd first, munged last), and only those."""
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for path in sorted((self.root / "log").glob("*")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


def start_cluster() -> SlurmCluster:
    """A started cluster in a new temporary folder (under /tmp: munge refuses a socket in a folder others may
    write to, and the folder is private)."""
    root = Path(tempfile.mkdtemp(prefix="tunebench-slurm-"))
    cluster = SlurmCluster(root)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster
