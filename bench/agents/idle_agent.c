/*
 * Idle agent for the memory/CPU benchmarks, in C so that 1,000 of them fit anywhere (~1 MB each):
 * connects to $CLOVE_SOCKET, SENDs {"up": pid} to the name "bench", then blocks in RECV with the
 * longest timeout the kernel allows, for ever. Same protocol as bench/agents/idle_agent.py.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int send_frame(int fd, uint8_t op, const char *body) {
  unsigned char buf[512];
  uint64_t n = strlen(body);
  uint32_t magic = 0x41474E54u, id = 0;
  memcpy(buf, &magic, 4); /* little-endian hosts only, as the benches */
  memcpy(buf + 4, &id, 4);
  buf[8] = op;
  memcpy(buf + 9, &n, 8);
  memcpy(buf + 17, body, n);
  return write(fd, buf, 17 + n) == (ssize_t)(17 + n) ? 0 : -1;
}

static int read_reply(int fd) {
  unsigned char hdr[17];
  size_t got = 0;
  while (got < 17) {
    ssize_t r = read(fd, hdr + got, 17 - got);
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  uint64_t n;
  memcpy(&n, hdr + 9, 8);
  char sink[4096];
  while (n > 0) {
    ssize_t r = read(fd, sink, n < sizeof sink ? n : sizeof sink);
    if (r <= 0) return -1;
    n -= (uint64_t)r;
  }
  return 0;
}

int main(void) {
  const char *path = getenv("CLOVE_SOCKET");
  if (!path) return 2;
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) return 3;
  char body[128];
  snprintf(body, sizeof body, "{\"to_name\":\"bench\",\"message\":{\"up\":%d}}", (int)getpid());
  if (send_frame(fd, 0x20, body) || read_reply(fd)) return 4;
  for (;;) {
    if (send_frame(fd, 0x21, "{\"max\":10,\"wait\":true,\"timeout_ms\":300000}") || read_reply(fd)) return 5;
  }
}
