// Frame encoding and the clock shared by the reactor and the mail store.
#include <cstring>

#include "fast.h"

namespace clove::fast {

void AppendFrame(std::string& out, uint32_t agent_id, uint8_t opcode, std::string_view payload) {
  char h[kHeaderSize];
  uint64_t size = payload.size();
  std::memcpy(h, &kMagic, 4);  // little-endian host (x86-64, aarch64)
  std::memcpy(h + 4, &agent_id, 4);
  h[8] = static_cast<char>(opcode);
  std::memcpy(h + 9, &size, 8);
  out.append(h, kHeaderSize);
  out.append(payload);
}

int64_t NowMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace clove::fast
