/*
 * The raw relay floor in C (bench/messaging.ts compiles it with `cc -O2`): one epoll thread on a Unix
 * socket, the protocol's 17-byte frame header (u32 magic, u32 agent id, u8 opcode, u64 payload length,
 * little-endian; only the length is read here). Each client's first frame names it `P<i>` or `C<i>`;
 * after that, the complete frames of each read are written to the paired connection as they are.
 * Why it exists: the lowest cost of "a process between two peers" on this machine, without Node.
 *
 *   relay <socket path>     prints "ready 0" once listening; runs until killed.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define HDR 17
#define MAXC 64
#define BUF (4 << 20)

struct conn {
  int fd;
  char name[32];
  struct conn *peer;
  unsigned char *in;
  size_t len;
};

static struct conn conns[MAXC];

static uint64_t frame_len(const unsigned char *p) {
  uint64_t n = 0;
  for (int i = 0; i < 8; i++) n |= (uint64_t)p[9 + i] << (8 * i);
  return n;
}

/* Writes all of buf (blocking on a full socket buffer: the peer reads, so it drains). */
static int write_all(int fd, const unsigned char *buf, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, buf, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        fd_set set;
        FD_ZERO(&set);
        FD_SET(fd, &set);
        select(fd + 1, NULL, &set, NULL, NULL);
        continue;
      }
      return -1;
    }
    buf += w;
    n -= (size_t)w;
  }
  return 0;
}

static struct conn *find(const char *name) {
  for (int i = 0; i < MAXC; i++)
    if (conns[i].fd > 0 && strcmp(conns[i].name, name) == 0) return &conns[i];
  return NULL;
}

static void drop(int ep, struct conn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  if (c->peer) c->peer->peer = NULL;
  free(c->in);
  memset(c, 0, sizeof *c);
}

/* Handles the complete frames in c->in: the first names the connection, the rest go to the peer. */
static void on_data(struct conn *c) {
  size_t off = 0;
  while (c->len - off >= HDR) {
    uint64_t n = frame_len(c->in + off);
    if (c->len - off < HDR + n) break;
    if (!c->name[0]) {
      size_t k = n < sizeof c->name - 1 ? n : sizeof c->name - 1;
      memcpy(c->name, c->in + off + HDR, k);
      char other[32];
      snprintf(other, sizeof other, "%c%s", c->name[0] == 'P' ? 'C' : 'P', c->name + 1);
      c->peer = find(other);
      if (c->peer) c->peer->peer = c;
      off += HDR + n;
      continue;
    }
    size_t start = off;
    while (c->len - off >= HDR && c->len - off >= HDR + frame_len(c->in + off)) off += HDR + frame_len(c->in + off);
    if (c->peer) write_all(c->peer->fd, c->in + start, off - start);
  }
  memmove(c->in, c->in + off, c->len - off);
  c->len -= off;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: relay <socket path>\n");
    return 2;
  }
  int ls = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
  unlink(argv[1]);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 128) < 0) {
    perror("relay: bind/listen");
    return 1;
  }
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  printf("ready 0\n");
  fflush(stdout);
  struct epoll_event evs[MAXC];
  for (;;) {
    int n = epoll_wait(ep, evs, MAXC, -1);
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (!c) {
        int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) continue;
        int slot = -1;
        for (int k = 0; k < MAXC && slot < 0; k++)
          if (conns[k].fd == 0) slot = k;
        if (slot < 0) {
          close(fd);
          continue;
        }
        conns[slot].fd = fd;
        conns[slot].in = malloc(BUF);
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = &conns[slot]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
        continue;
      }
      ssize_t r = read(c->fd, c->in + c->len, BUF - c->len);
      if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        drop(ep, c);
        continue;
      }
      c->len += (size_t)r;
      on_data(c);
      if (c->len == BUF) drop(ep, c); /* a frame larger than the buffer: not this bench's traffic */
    }
  }
}
