#!/bin/sh
# A classic fork bomb; only safe inside the sandbox's pids cgroup and PID namespace. This shell forks
# exactly twice (the keeper, then the bomb's subshell) so its own forks cannot hit the limit: it survives
# until the test kills it.
sleep 30 &
keeper=$!
bomb() { bomb | bomb & }
(bomb) &
wait $keeper
