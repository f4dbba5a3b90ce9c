// The Child handle (defined in spawn.cc) that spawn() and execInAgent() (enter.cc) return: the owner of
// one child's pidfd (and, for spawn, of its status pipe), reaped from a pidfd watcher on libuv's loop.
#pragma once
#include <napi.h>
#include <sys/types.h>

#include "fd.h"

namespace clove {

// A new JS Child owning `pidfd` and `status` (may be empty: nothing is read from it at exit). `agentPid`
// is the pid clove-init reported for its agent, -1 when there is none.
Napi::Object AdoptChild(Napi::Env env, pid_t pid, UniqueFd pidfd, UniqueFd status, int agentPid);

}  // namespace clove
