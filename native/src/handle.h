// The Child handle (defined in spawn.cc) that spawn() and execInAgent() (enter.cc) return: the owner of
// one child's exit watch (its pidfd, or for spawn under clove-init its status pipe), reaped on libuv's loop.
#pragma once
#include <napi.h>
#include <sys/types.h>

#include "fd.h"

namespace clove {

// A new JS Child owning `pidfd` and `status` (may be empty: nothing is read from it at exit). With `pidfd`
// empty, the exit is watched through the EOF of `status` (its writer must be the child alone). `agentPid`
// is the pid clove-init reported for its agent, -1 when there is none.
Napi::Object AdoptChild(Napi::Env env, pid_t pid, UniqueFd pidfd, UniqueFd status, int agentPid);

}  // namespace clove
