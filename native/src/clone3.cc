#include "clone3.h"

#include <sys/syscall.h>

extern "C" long clove_clone3_raw(clove::CloneArgs* args, size_t size, int (*fn)(void*), void* arg);

#if defined(__x86_64__)
// rdi = args, rsi = size, rdx = fn, rcx = arg. syscall clobbers rcx and r11 only, so arg moves to r8
// (preserved, and copied into the child). The child starts on args->stack with every other register as
// the parent had it.
asm(R"(
  .text
  .globl clove_clone3_raw
  .hidden clove_clone3_raw
  .type clove_clone3_raw,@function
clove_clone3_raw:
  mov %rcx, %r8
  mov $435, %eax
  syscall
  test %rax, %rax
  jz 1f
  ret
1:
  xor %ebp, %ebp
  and $-16, %rsp
  mov %r8, %rdi
  call *%rdx
  mov %rax, %rdi
  mov $60, %eax
  syscall
  hlt
  .size clove_clone3_raw, .-clove_clone3_raw
)");
#endif

namespace clove {

bool CloneVmSupported() {
#if defined(__x86_64__)
  return true;
#else
  return false;
#endif
}

long CloneVm(CloneArgs* args, int (*fn)(void*), void* arg) {
#if defined(__x86_64__)
  return clove_clone3_raw(args, sizeof(*args), fn, arg);
#else
  (void)args;
  (void)fn;
  (void)arg;
  return -38;  // ENOSYS
#endif
}

}  // namespace clove
