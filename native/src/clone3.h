// clone3 with CLONE_VM: the child runs fn(arg) on its own stack inside the parent's address space, the
// way posix_spawn does, so spawning costs no page-table copy of the (large) Node process.
#pragma once
#include <stddef.h>
#include <stdint.h>

// Flags of newer kernels that glibc's headers may not define yet.
#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace clove {

// Mirrors struct clone_args of <linux/sched.h> (CLONE_ARGS_SIZE_VER2), which cannot be included next to
// glibc's <sched.h>.
struct CloneArgs {
  uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};

// True where CloneVm is implemented (x86_64); elsewhere callers use fork-style clone3.
bool CloneVmSupported();

// Returns the child's pid in the parent (or -errno). The child calls fn(arg) on args->stack and exits
// with its return value; fn must exec or _exit and must not touch anything the parent could be using
// concurrently (with CLONE_VFORK the parent is suspended until the child execs or exits).
long CloneVm(CloneArgs* args, int (*fn)(void*), void* arg);

}  // namespace clove
