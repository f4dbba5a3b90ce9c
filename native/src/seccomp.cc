// The agents' seccomp filter (see seccomp.h), hand-assembled classic BPF, no libseccomp.
//
// A denylist rather than Docker's allowlist: the agent already runs without capabilities, under
// NO_NEW_PRIVS, in its own namespaces, so the filter only has to close what an unprivileged process can
// still reach that a container runtime closes (kernel attack surface and cross-process access), and
// system calls added by newer kernels keep working. The list follows the calls moby's default profile
// (profiles/seccomp/default.json) refuses to a container without extra capabilities; the reason for
// each group is next to it, and docs/sandbox.md "System calls" has the table.
//
// The program is computed at compile time (consteval) into read-only data: installing it is one
// prctl and one seccomp call, nothing else, so it is safe between clone and execve.
#include "seccomp.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

// System calls of newer kernels: since 424 every architecture shares one number.
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif
#ifndef __NR_open_tree
#define __NR_open_tree 428
#endif
#ifndef __NR_move_mount
#define __NR_move_mount 429
#endif
#ifndef __NR_fsopen
#define __NR_fsopen 430
#endif
#ifndef __NR_fsconfig
#define __NR_fsconfig 431
#endif
#ifndef __NR_fsmount
#define __NR_fsmount 432
#endif
#ifndef __NR_fspick
#define __NR_fspick 433
#endif
#ifndef __NR_clone3
#define __NR_clone3 435
#endif
#ifndef __NR_pidfd_getfd
#define __NR_pidfd_getfd 438
#endif
#ifndef __NR_process_madvise
#define __NR_process_madvise 440
#endif
#ifndef __NR_mount_setattr
#define __NR_mount_setattr 442
#endif
#ifndef __NR_quotactl_fd
#define __NR_quotactl_fd 443
#endif
#ifndef __NR_open_tree_attr
#define __NR_open_tree_attr 467
#endif

#ifndef SECCOMP_RET_KILL_PROCESS
#define SECCOMP_RET_KILL_PROCESS 0x80000000U
#endif
#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

namespace clove {
namespace {

#if defined(__x86_64__)
constexpr bool kSupported = true;
constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
constexpr bool kCheckX32 = true;  // x32 calls arrive with the x86_64 arch and bit 30 set in the number
#elif defined(__aarch64__)
constexpr bool kSupported = true;
constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
constexpr bool kCheckX32 = false;
#else
constexpr bool kSupported = false;
constexpr uint32_t kArch = 0;
constexpr bool kCheckX32 = false;
#endif
constexpr uint32_t kX32Bit = 0x40000000U;  // __X32_SYSCALL_BIT

// Calls that always fail with EPERM.
constexpr int kDenied[] = {
    // Mounting and the mount API: the agent's view of the file system is fixed by the sandbox.
    // (Without capabilities they fail anyway; in a user namespace of its own they would not.)
    __NR_mount,
    __NR_umount2,
#ifdef __NR_umount
    __NR_umount,
#endif
    __NR_pivot_root,
    __NR_open_tree,
    __NR_open_tree_attr,
    __NR_move_mount,
    __NR_fsopen,
    __NR_fsconfig,
    __NR_fsmount,
    __NR_fspick,
    __NR_mount_setattr,
    // Joining namespaces (unshare and clone are filtered on their flags, below).
    __NR_setns,
    // Other processes: reading, writing or inspecting another process's memory, fds and kernel
    // objects. The agent's uid alone would allow it for its own tree, and with a shared uid (65534)
    // between agents of one namespace-less host it would be much more; debuggers (gdb, strace) do not
    // work in an agent.
    __NR_ptrace,
    __NR_process_vm_readv,
    __NR_process_vm_writev,
    __NR_kcmp,
    __NR_pidfd_getfd,
    __NR_process_madvise,
    // Moving another process's pages between NUMA nodes (move_pages leaked other processes' memory
    // layout, CVE-2017-14140). The caller's own memory policy (mbind, set_mempolicy, get_mempolicy)
    // stays allowed: it only places its own pages, within its cpuset, and NUMA-aware runtimes use it.
    __NR_move_pages,
    __NR_migrate_pages,
    // The kernel keyrings are not namespaced: keys and quotas are shared per uid across the host.
    __NR_add_key,
    __NR_keyctl,
    __NR_request_key,
    // Large kernel attack surfaces an agent does not need: eBPF, perf events (also side channels),
    // userfaultfd (the classic way to win kernel races), io_uring (its own long list of CVEs; programs
    // fall back to ordinary calls), fanotify.
    __NR_bpf,
    __NR_perf_event_open,
    __NR_userfaultfd,
    __NR_io_uring_setup,
    __NR_io_uring_enter,
    __NR_io_uring_register,
    __NR_fanotify_init,
    // Handles bypass path permission checks (open_by_handle_at was the "shocker" container escape).
    __NR_name_to_handle_at,
    __NR_open_by_handle_at,
    // Kernel modules, kexec, reboot, swap, process accounting, quotas: host administration.
    __NR_init_module,
    __NR_finit_module,
    __NR_delete_module,
#ifdef __NR_create_module
    __NR_create_module,
#endif
#ifdef __NR_get_kernel_syms
    __NR_get_kernel_syms,
#endif
#ifdef __NR_query_module
    __NR_query_module,
#endif
    __NR_kexec_load,
#ifdef __NR_kexec_file_load
    __NR_kexec_file_load,
#endif
    __NR_reboot,
    __NR_swapon,
    __NR_swapoff,
    __NR_acct,
    __NR_quotactl,
    __NR_quotactl_fd,
    // The clock is the host's (time is not namespaced for CLOCK_REALTIME). Read-only adjtimex goes too:
    // glibc implements adjtimex/ntp_gettime with clock_adjtime.
    __NR_settimeofday,
#ifdef __NR_stime
    __NR_stime,
#endif
    __NR_clock_settime,
    __NR_clock_adjtime,
    __NR_adjtimex,
    // The kernel log (addresses, other tenants' messages) and the terminal of the session.
    __NR_syslog,
    __NR_vhangup,
    // Raw I/O ports and virtual-8086 mode (x86).
#ifdef __NR_ioperm
    __NR_ioperm,
#endif
#ifdef __NR_iopl
    __NR_iopl,
#endif
#ifdef __NR_vm86
    __NR_vm86,
#endif
#ifdef __NR_vm86old
    __NR_vm86old,
#endif
    // Obsolete calls with a history of bugs, kept by the kernel for old binaries only.
#ifdef __NR_uselib
    __NR_uselib,
#endif
#ifdef __NR_ustat
    __NR_ustat,
#endif
#ifdef __NR_sysfs
    __NR_sysfs,
#endif
#ifdef __NR__sysctl
    __NR__sysctl,
#endif
#ifdef __NR_lookup_dcookie
    __NR_lookup_dcookie,
#endif
#ifdef __NR_nfsservctl
    __NR_nfsservctl,
#endif
};

// Namespace-creating flags. clone() carries the exit signal in its low byte, where unshare() and
// clone3() put CLONE_NEWTIME, so clone's mask leaves that byte alone.
constexpr uint32_t kCloneNsFlags =
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET;
constexpr uint32_t kUnshareNsFlags = kCloneNsFlags | CLONE_NEWTIME;

// personality() values a container runtime allows (Docker's list): the Linux persona, PER_LINUX32,
// UNAME26, both, and 0xffffffff (query). Everything else (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC,
// MMAP_PAGE_ZERO, foreign personas) weakens the agent's own exploit mitigations: EPERM.
constexpr uint32_t kPersonalities[] = {0x0, 0x8, 0x20000, 0x20008, 0xffffffffU};

constexpr uint32_t kAllow = SECCOMP_RET_ALLOW;
constexpr uint32_t kEperm = SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);
constexpr uint32_t kEnosys = SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA);
constexpr uint32_t kKill = SECCOMP_RET_KILL_PROCESS;

// The low 32 bits of argument 0: every argument we inspect is an int (or, for clone and unshare, a long
// of which the kernel only looks at the low half), so the high half must be ignored, not compared.
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
constexpr uint32_t kArg0Lo = offsetof(seccomp_data, args);
#else
constexpr uint32_t kArg0Lo = offsetof(seccomp_data, args) + 4;
#endif

constexpr size_t kMaxInsns = 256;  // 142 used on x86_64

struct Program {
  sock_filter insns[kMaxInsns];
  unsigned short len;
};

// What the filter does with one system call number.
enum class Action { kEperm, kEnosys, kClone, kUnshare, kSocket, kPersonality };

struct Entry {
  uint32_t nr;
  Action action;
};

constexpr size_t kDeniedCount = sizeof(kDenied) / sizeof(kDenied[0]);
constexpr size_t kEntryCount = kDeniedCount + 5;

// Called only when a constant program would be malformed: not constexpr, so the build fails.
void ProgramTooLarge() {}
void JumpTooFar() {}
void DuplicateSyscall() {}

// Assembles the program. The numbers are searched in a balanced tree (jge on the middle entry, a few
// jeq in each leaf) rather than one by one: the kernel runs the filter at every call that its
// per-number cache (Linux >= 5.11) cannot answer, and, at install time, emulates it once per number of
// each ABI to fill that cache, so the path length is paid about 900 times per spawn. A linear list of
// ~75 compares cost ~150 us per install here; the tree keeps every path to about ten instructions.
struct Assembler {
  Program p{};
  size_t n = 0;

  consteval size_t Emit(uint16_t code, uint32_t k, size_t jt = 0, size_t jf = 0) {
    if (n == kMaxInsns) ProgramTooLarge();
    if (jt > 255 || jf > 255) JumpTooFar();
    p.insns[n] = sock_filter{code, (uint8_t)jt, (uint8_t)jf, k};
    return n++;
  }
  consteval void Ret(uint32_t action) { Emit(BPF_RET | BPF_K, action); }
  // Points the true branch of the conditional jump at `from` to the next instruction emitted.
  consteval void LandTrue(size_t from) {
    size_t off = n - from - 1;
    if (off > 255) JumpTooFar();
    p.insns[from].jt = (uint8_t)off;
  }
  consteval void LoadArg0() { Emit(BPF_LD | BPF_W | BPF_ABS, kArg0Lo); }

  // The returns of one action (the accumulator holds the number; the blocks load argument 0).
  consteval void ActionBlock(Action a) {
    switch (a) {
      case Action::kEperm:
        Ret(kEperm);
        break;
      case Action::kEnosys:
        Ret(kEnosys);
        break;
      case Action::kClone:  // threads and fork are fine, a new namespace is not
        LoadArg0();
        Emit(BPF_JMP | BPF_JSET | BPF_K, kCloneNsFlags, 0, 1);
        Ret(kEperm);
        Ret(kAllow);
        break;
      case Action::kUnshare:  // CLONE_FILES, CLONE_FS, CLONE_SYSVSEM are fine, a new namespace is not
        LoadArg0();
        Emit(BPF_JMP | BPF_JSET | BPF_K, kUnshareNsFlags, 0, 1);
        Ret(kEperm);
        Ret(kAllow);
        break;
      case Action::kSocket:  // AF_VSOCK reaches the hypervisor, outside every network namespace
        LoadArg0();
        Emit(BPF_JMP | BPF_JEQ | BPF_K, AF_VSOCK, 0, 1);
        Ret(kEperm);
        Ret(kAllow);
        break;
      case Action::kPersonality: {
        const size_t np = sizeof(kPersonalities) / sizeof(kPersonalities[0]);
        LoadArg0();
        for (size_t i = 0; i < np; i++) Emit(BPF_JMP | BPF_JEQ | BPF_K, kPersonalities[i], np - i, 0);
        Ret(kEperm);
        Ret(kAllow);
        break;
      }
    }
  }

  // Entries [lo, hi) of the sorted table; every number outside them that reaches here is allowed.
  consteval void Tree(const Entry* e, size_t lo, size_t hi) {
    constexpr size_t kLeaf = 4;
    if (hi - lo > kLeaf) {
      size_t mid = lo + (hi - lo) / 2;
      size_t jge = Emit(BPF_JMP | BPF_JGE | BPF_K, e[mid].nr);
      Tree(e, lo, mid);
      LandTrue(jge);
      Tree(e, mid, hi);
      return;
    }
    size_t jeq[kLeaf] = {};
    for (size_t i = lo; i < hi; i++) jeq[i - lo] = Emit(BPF_JMP | BPF_JEQ | BPF_K, e[i].nr);
    Ret(kAllow);
    for (size_t i = lo; i < hi; i++) {
      // Entries of one leaf with the same plain return share it.
      bool shared = false;
      for (size_t j = lo; j < i && !shared; j++) {
        if (e[j].action == e[i].action && (e[i].action == Action::kEperm || e[i].action == Action::kEnosys)) {
          p.insns[jeq[i - lo]].jt = (uint8_t)(p.insns[jeq[j - lo]].jt + jeq[j - lo] - jeq[i - lo]);
          shared = true;
        }
      }
      if (shared) continue;
      LandTrue(jeq[i - lo]);
      ActionBlock(e[i].action);
    }
  }
};

consteval Program Build() {
  // The table, sorted by number.
  Entry e[kEntryCount] = {};
  size_t count = 0;
  for (int nr : kDenied) e[count++] = {(uint32_t)nr, Action::kEperm};
  // clone3 passes its flags in memory the filter cannot read: ENOSYS makes glibc (and Go, Rust, ...)
  // fall back to clone, whose flags it can.
  e[count++] = {__NR_clone3, Action::kEnosys};
  e[count++] = {__NR_clone, Action::kClone};
  e[count++] = {__NR_unshare, Action::kUnshare};
  e[count++] = {__NR_socket, Action::kSocket};
  e[count++] = {__NR_personality, Action::kPersonality};
  for (size_t i = 1; i < count; i++)
    for (size_t j = i; j > 0 && e[j - 1].nr > e[j].nr; j--) {
      Entry t = e[j];
      e[j] = e[j - 1];
      e[j - 1] = t;
    }
  for (size_t i = 1; i < count; i++)
    if (e[i - 1].nr == e[i].nr) DuplicateSyscall();

  Assembler a;
  // Another ABI (32-bit x86 via int 0x80, arm32 compat, x32) numbers its calls differently, so the
  // denylist would not hold: kill the process (SIGSYS) at its first such call.
  a.Emit(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch));
  a.Emit(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0);
  a.Ret(kKill);
  a.Emit(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr));
  if (kCheckX32) {
    a.Emit(BPF_JMP | BPF_JSET | BPF_K, kX32Bit, 0, 1);
    a.Ret(kKill);
  }
  a.Tree(e, 0, count);
  a.p.len = (unsigned short)a.n;
  return a.p;
}

constexpr Program kProgram = Build();

}  // namespace

bool SeccompSupported() { return kSupported; }

SeccompResult InstallAgentSeccomp() {
  if (!kSupported) return {ENOSYS, "seccomp (architecture not supported)"};
  // Without NO_NEW_PRIVS an unprivileged process cannot install a filter, and a privileged one could
  // exec a set-uid program under it: both are bugs of the caller, never silently "fixed" here.
  int nnp = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
  if (nnp < 0) return {errno, "prctl(PR_GET_NO_NEW_PRIVS)"};
  if (nnp != 1) return {EPERM, "seccomp: NO_NEW_PRIVS is not set"};
  struct sock_fprog prog {};
  prog.len = kProgram.len;
  prog.filter = const_cast<sock_filter*>(kProgram.insns);
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) return {errno, "seccomp(SECCOMP_SET_MODE_FILTER)"};
  return {0, nullptr};
}

}  // namespace clove
