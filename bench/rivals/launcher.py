"""Tiny launcher: move this process into the given cgroup directories, verify, then exec.

usage: python3 launcher.py CGROUP_DIR [CGROUP_DIR ...] -- PROGRAM [ARGS ...]

run.py starts every workload through this, so the workload (and everything it ever forks)
is inside the memory/pids/cpu cgroups before its first instruction runs.  Stdlib only.
"""
import os
import sys


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        sys.exit("usage: launcher.py CGROUP_DIR... -- PROGRAM ARGS...")
    split = argv.index("--")
    dirs, cmd = argv[:split], argv[split + 1:]
    pid = str(os.getpid())
    for d in dirs:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(pid)
        with open(os.path.join(d, "cgroup.procs")) as f:
            if pid not in f.read().split():
                sys.exit(f"launcher: pid {pid} did not land in {d}")
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
