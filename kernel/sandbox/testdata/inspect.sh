#!/bin/sh
# Prints what the agent can see of the host: its pid, the processes of its PID namespace, who it runs
# as, whether it can signal a host pid ($HOST_PID), and which parts of the file system are writable.
echo "pid=$$"
echo "procs=$(ls /proc | grep -E '^[0-9]+$' | tr '\n' ' ')"
echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "groups=$(id -G)"
echo "hostname=$(hostname)"
if kill -0 "$HOST_PID" 2>/dev/null; then echo "hostkill=yes"; else echo "hostkill=no"; fi
if kill -0 1 2>/dev/null; then echo "initkill=yes"; else echo "initkill=no"; fi
if touch /etc/clove-sandbox-probe 2>/dev/null; then echo "rootwrite=yes"; rm -f /etc/clove-sandbox-probe; else echo "rootwrite=no"; fi
if touch ./cwd-probe 2>/dev/null; then echo "cwdwrite=yes"; else echo "cwdwrite=no"; fi
if touch /tmp/tmp-probe 2>/dev/null; then echo "tmpwrite=yes"; else echo "tmpwrite=no"; fi
echo "caps=$(grep CapEff /proc/self/status | tr -d '\t ')"
echo "nnp=$(grep NoNewPrivs /proc/self/status | tr -d '\t ')"
echo "nofile=$(ulimit -n)"
echo "fds=$(ls /proc/self/fd | tr '\n' ' ')"
