// The agents' seccomp filter: a classic-BPF denylist modelled on a container runtime's default profile
// (mount, namespaces, ptrace, keyrings, bpf, perf, module loading, kexec, io_uring, ...; the full list
// with reasons is in seccomp.cc and docs/sandbox.md "System calls"). Denied calls fail with EPERM
// (clone3 with ENOSYS, so libc falls back to clone, whose flags the filter can inspect); a system call
// of another ABI (32-bit x86 or arm, x32) kills the process; everything else is allowed.
//
// Compiled into both clove-init (which installs it for an agent's whole PID namespace) and the addon
// (for code that starts a process inside an agent's namespaces by other means, e.g. EXEC via setns).
#pragma once

namespace clove {

struct SeccompResult {
  int err;           // 0 when installed, else an errno value
  const char* what;  // the failed step (a static string, < 52 bytes: fits a status Record), or nullptr
};

// True when the filter is built for this architecture (x86_64, aarch64). Elsewhere InstallAgentSeccomp
// fails with ENOSYS and callers must report the filter as not applied.
bool SeccompSupported();

// Installs the filter on the calling thread; it stays for the life of the process and every child it
// forks, across execve. Requires NO_NEW_PRIVS to be set already (prctl(PR_SET_NO_NEW_PRIVS, 1)): fails
// with EPERM otherwise, never sets it itself. Install it LAST, right before execve: it denies setns,
// mount, unshare and the rest, so every namespace join and mount must be done by then.
//
// Raw syscalls only, no allocation, no locks (the program is a constant): safe between clone/vfork and
// execve, in a child that shares the parent's address space.
SeccompResult InstallAgentSeccomp();

}  // namespace clove
