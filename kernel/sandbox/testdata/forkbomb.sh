#!/bin/sh
# A classic fork bomb; only safe inside the sandbox's pids cgroup and PID namespace.
bomb() { bomb | bomb & }
bomb
sleep 30
