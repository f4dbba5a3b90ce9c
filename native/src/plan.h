// The spawn plan: everything the cloned child needs, prepared by the parent BEFORE clone3 so the child
// never allocates, never takes a lock and never calls into glibc state shared with Node's threads.
#pragma once
#include <stdint.h>
#include <sys/resource.h>

#include <string>
#include <vector>

namespace clove {

// Records written on the status pipe (one write each, < PIPE_BUF so atomic).
enum RecordKind : uint32_t {
  kRecordError = 1,    // setup or exec failed: err = errno, what = syscall
  kRecordStarted = 2,  // the agent exec'd: value = its pid (in the agent's pid namespace)
  kRecordExited = 3,   // the agent was reaped by init: value = raw wait status; on the shared exit
                       // pipe (fd 4, see spawn.cc's Reaper) err = the spawn's exit token
  kRecordParked = 4,   // clove-init --park is ready and waits for SIGUSR1 before starting the agent; a
                       // kRecordStarted (err = the exit token) follows on the exit pipe once it did
};

struct Record {
  uint32_t kind;
  int32_t value;
  int32_t err;
  char what[52];
};
static_assert(sizeof(Record) == 64, "status record must stay 64 bytes");

struct RlimitItem {
  int resource;
  struct rlimit limit;
};

// A directory bound read-only into the agent's mount namespace through an idmapped mount: files owned
// by ids the user namespace maps appear owned by the ids it maps them to (see createIdmapUserns).
struct IdmappedMount {
  std::string path;   // absolute; both the source and the mount point
  int usernsFd = -1;  // user namespace fd for MOUNT_ATTR_IDMAP, owned by the caller
};

struct Plan {
  // exec
  std::string file;                 // agent executable (absolute)
  std::vector<std::string> argv;    // agent argv
  std::vector<std::string> envp;    // agent environment, "K=V"
  std::string initPath;             // clove-init, or empty to exec the agent directly
  std::string cwd;
  int stdoutFd = -1;
  // The kernel's shared exit pipe (write end) and this spawn's token on it: clove-init gets the pipe as
  // fd 4 and `--exit-token=<n>`, and reports the agent's status there; -1/empty = on fd 3 as before.
  int exitFd = -1;
  std::string exitTokenArg;
  // namespaces
  uint64_t cloneFlags = 0;          // CLONE_NEW* only
  int netnsFd = -1;                 // setns(CLONE_NEWNET) target, -1 = keep
  std::string hostname;
  bool newUser = false;
  // cgroups
  int cgroupFd = -1;                // v2 directory fd for CLONE_INTO_CGROUP, -1 = none
  std::vector<std::string> cgroupProcs;  // v1 cgroup.procs files the child joins first
  // file system
  bool readOnlyRoot = false;
  bool mountProc = false;
  std::string tmpfsOptions;         // mount a private tmpfs on /tmp (and /dev/shm) with these options
  std::vector<std::string> writable;  // bind-mounted read-write on top of the read-only root
  std::vector<std::string> masks;     // directories covered by a fresh tmpfs ("/tmp" gets tmpfsOptions)
  std::vector<std::string> keep;      // directories under a mask bound back in (cwd, socket dir, program)
  std::vector<IdmappedMount> idmapped;  // cloned before the masks, mounted after them and after keep
  std::vector<std::string> hideFiles;  // host Unix sockets covered by a read-only bind of /dev/null, last
  // credentials
  bool setsid = false;
  bool noNewPrivs = false;
  bool dropCaps = false;
  bool seccomp = false;             // clove-init --seccomp: the agents' syscall filter (seccomp.h); needs initPath
  bool outliveKernel = false;       // clove-init --outlive-kernel: no PR_SET_PDEATHSIG (a new kernel re-adopts it)
  bool park = false;                // clove-init --park: a sandbox made in advance (needs initPath and exitFd)
  int uid = -1;
  int gid = -1;
  std::vector<RlimitItem> rlimits;

  // Derived, filled by Finalize(): NULL-terminated pointer arrays into the strings above.
  std::vector<char*> argvPtrs;
  std::vector<char*> envpPtrs;
  std::vector<char*> cgroupProcPtrs;
  std::vector<char*> writablePtrs;
  std::vector<char*> maskPtrs;
  std::vector<char*> keepPtrs;
  std::vector<char*> hidePtrs;
  void Finalize();
};

// Runs in the cloned child; never returns. Reports failures as a kRecordError on statusFd and _exits.
[[noreturn]] void ChildMain(const Plan& plan, int statusFd, int syncFd);

}  // namespace clove
