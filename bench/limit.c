/* limit: the physical-limit yardstick of bench/run.sh.  A minimal NBD
 * client with no library: it does the socket work that any client of the
 * same workload must do, and nothing else, so its client CPU and
 * throughput are what the kernel and the server allow.
 *
 *   limit URI SECONDS TEST           one test named like aio-bench's
 *   limit URI copy CONNS QD BS       read the whole export, nbdcopy-like
 *
 * Environment (for experiments; bench/run.sh sets none of them):
 * LIMIT_ONE_PER_SEND=1 sends each request with its own sendmsg;
 * LIMIT_MEMSET=1 zeroes each read buffer first (libnbd's default
 * nbd_set_pread_initialize behaviour);
 * LIMIT_STAGE=1 / LIMIT_DIRECT=1 force either way of receiving replies.
 *
 * URI is nbd+unix:///?socket=PATH (or a bare socket path); the default
 * export.  Handshake: fixed newstyle, NBD_OPT_GO with no information
 * requests, nothing else (no structured replies, no meta contexts, no
 * extended headers), so every reply is a 16-byte simple reply.
 *
 * TEST is one of aio-{read,write}-{4,64,1024}k-qd{1,16,64} (the same
 * tests as aio-bench: QD requests in flight, random offsets aligned to the
 * size inside the first 256 MiB), sync-pread-4k-qd1 (blocking: one
 * send + one recvmsg(MSG_WAITALL) per request) or randrw-4k-qd32 (fio's
 * workload 3: random 4 KiB reads and writes, half and half, over the whole
 * export).  One poll(2) loop on a non-blocking socket:
 *
 *  - requests: the 28-byte headers are pre-built per slot (only the type,
 *    offset and cookie change); every request ready at one moment goes out
 *    in ONE sendmsg (headers and write payloads as iovecs straight from
 *    the slot buffers: no copy), and the rest waits for POLLOUT if the
 *    socket is full;
 *  - replies to reads of 64 KiB and more: readv straight into the slot's
 *    buffer plus the next 16-byte header, so each payload byte is copied
 *    once, by the kernel, with about one system call per reply;
 *  - other replies (writes, reads under 64 KiB): recv of up to 256 KiB at
 *    a time, then the payloads are copied to their slot buffers (one
 *    4 KiB memcpy costs far less than a system call per reply);
 *  - a recv or readv that returns less than asked ends the wake-up (the
 *    socket is empty).
 *
 * copy mode: CONNS threads, each with its own connection, take 128 MiB
 * pieces of the export in turn (nbdcopy's copy threads also share the
 * export out in pieces) and read each piece in BS-byte requests with QD
 * in flight; the data is dropped (nbdcopy's null: destination).
 *
 * Output, as aio-bench's:
 *   result name=NAME ops=N bytes=B secs=S cpu=C
 * with C this process's user + system CPU (getrusage RUSAGE_SELF, all
 * threads) over the measured part.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

#define NBDMAGIC          0x4e42444d41474943ull
#define IHAVEOPT          0x49484156454f5054ull
#define OPT_REPLY_MAGIC   0x0003e889045565a9ull
#define REQUEST_MAGIC     0x25609513u
#define SIMPLE_REPLY_MAGIC 0x67446698u
#define OPT_GO            7u
#define REP_ACK           1u
#define REP_INFO          3u
#define FLAG_FIXED_NEWSTYLE 1u
#define FLAG_NO_ZEROES    2u
#define CMD_READ          0u
#define CMD_WRITE         1u

#define REGION (256ull * 1024 * 1024)
#define PIECE (128ull * 1024 * 1024)
#define STAGE (256u * 1024)
#define DIRECT_MIN (64u * 1024)
#define MAX_QD 64
#define MAX_IOV 256

static void
fail (const char *what)
{
  fprintf (stderr, "limit: %s: %s\n", what, errno ? strerror (errno) : "failed");
  exit (EXIT_FAILURE);
}


/* The same generator and seed as aio-bench. */
static uint64_t
rng (uint64_t *state)
{
  uint64_t x = *state;

  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *state = x;
  return x;
}

static void
put16 (unsigned char *p, uint16_t v)
{
  p[0] = v >> 8;
  p[1] = v;
}

static void
put32 (unsigned char *p, uint32_t v)
{
  put16 (p, v >> 16);
  put16 (p + 2, v);
}

static void
put64 (unsigned char *p, uint64_t v)
{
  put32 (p, v >> 32);
  put32 (p + 4, v);
}

static uint16_t
get16 (const unsigned char *p)
{
  return (uint16_t) (p[0] << 8 | p[1]);
}

static uint32_t
get32 (const unsigned char *p)
{
  return (uint32_t) get16 (p) << 16 | get16 (p + 2);
}

static uint64_t
get64 (const unsigned char *p)
{
  return (uint64_t) get32 (p) << 32 | get32 (p + 4);
}

/* Blocking I/O for the handshake and the synchronous test. */
static void
read_all (int fd, void *buf, size_t len)
{
  unsigned char *p = buf;

  while (len > 0) {
    ssize_t r = read (fd, p, len);

    if (r == 0) {
      errno = 0;
      fail ("server closed the connection");
    }
    if (r == -1) {
      if (errno == EINTR)
        continue;
      fail ("read");
    }
    p += r;
    len -= (size_t) r;
  }
}

static void
write_all (int fd, const void *buf, size_t len)
{
  const unsigned char *p = buf;

  while (len > 0) {
    ssize_t r = send (fd, p, len, MSG_NOSIGNAL);

    if (r == -1) {
      if (errno == EINTR)
        continue;
      fail ("send");
    }
    p += r;
    len -= (size_t) r;
  }
}

/* Connects and negotiates; returns the socket (blocking) and the size. */
static int
nbd_open (const char *uri, uint64_t *size)
{
  static const char prefix[] = "nbd+unix:///?socket=";
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  const char *path = uri;
  unsigned char buf[64], opt[16 + 6];
  uint16_t hflags;
  uint32_t cflags;
  bool have_size = false;
  int fd;

  if (strncmp (uri, prefix, sizeof prefix - 1) == 0)
    path = uri + sizeof prefix - 1;
  if (strlen (path) >= sizeof sun.sun_path || strchr (path, '&')) {
    errno = 0;
    fail ("only nbd+unix:///?socket=PATH URIs are supported");
  }
  strcpy (sun.sun_path, path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1)
    fail ("socket");
  if (connect (fd, (struct sockaddr *) &sun, sizeof sun) == -1)
    fail ("connect");

  read_all (fd, buf, 18);
  if (get64 (buf) != NBDMAGIC || get64 (buf + 8) != IHAVEOPT) {
    errno = 0;
    fail ("not a newstyle NBD server");
  }
  hflags = get16 (buf + 16);
  if (!(hflags & FLAG_FIXED_NEWSTYLE)) {
    errno = 0;
    fail ("the server does not do fixed newstyle");
  }
  cflags = FLAG_FIXED_NEWSTYLE | (hflags & FLAG_NO_ZEROES);
  put32 (buf, cflags);
  write_all (fd, buf, 4);

  /* NBD_OPT_GO: empty export name, no information requests. */
  put64 (opt, IHAVEOPT);
  put32 (opt + 8, OPT_GO);
  put32 (opt + 12, 6);
  put32 (opt + 16, 0);
  put16 (opt + 20, 0);
  write_all (fd, opt, sizeof opt);
  for (;;) {
    uint32_t type, len;

    read_all (fd, buf, 20);
    if (get64 (buf) != OPT_REPLY_MAGIC || get32 (buf + 8) != OPT_GO) {
      errno = 0;
      fail ("bad option reply");
    }
    type = get32 (buf + 12);
    len = get32 (buf + 16);
    if (type & 0x80000000u) {
      errno = 0;
      fail ("the server refused NBD_OPT_GO");
    }
    if (type == REP_ACK)
      break;
    while (len > 0) {
      unsigned char info[64];
      uint32_t n = len < sizeof info ? len : sizeof info;

      read_all (fd, info, n);
      if (type == REP_INFO && n == len && len >= 12 && get16 (info) == 0) {
        *size = get64 (info + 2);
        have_size = true;
      }
      len -= n;
    }
  }
  if (!have_size) {
    errno = 0;
    fail ("no export size in the reply to NBD_OPT_GO");
  }
  return fd;
}

static void
set_nonblock (int fd, bool on)
{
  int fl = fcntl (fd, F_GETFL);

  if (fl == -1 || fcntl (fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) == -1)
    fail ("fcntl");
}

/* ----- the poll loop ----------------------------------------------------- */

enum mode { RANDOM_READ, RANDOM_WRITE, RANDOM_MIX, SEQUENTIAL_READ };

struct slot {
  bool busy;
  bool write;
  unsigned char req[28];
  unsigned char *buf;
};

struct conn {
  int fd;
  uint64_t size;
  uint64_t bs;
  unsigned qd;
  enum mode mode;
  uint64_t rng;
  struct slot slots[MAX_QD];

  /* Requests waiting to be sent, in order, and how much of the first one
   * went out already. */
  unsigned outq[MAX_QD];
  unsigned out_head, out_len;
  size_t out_done;

  /* LIMIT_ONE_PER_SEND: one request per sendmsg, as the libraries send
   * (to measure what batching the sends saves). */
  bool one_per_send;

  /* LIMIT_MEMSET: zero each read buffer before the read is issued, as
   * libnbd (and ours) do while nbd_set_pread_initialize is on, the
   * default. */
  bool memset_reads;

  /* Replies: staging buffer, or header + direct payload. */
  bool direct;
  unsigned char *stage;
  size_t stage_len;
  unsigned char hdr[16];
  size_t hdr_got;
  unsigned char *pay;
  size_t pay_left;
  unsigned pay_slot;

  uint64_t issued, completed;

  /* Sequential reads (copy mode): the next offset and the end of the
   * piece being read. */
  uint64_t next, end;
};

static void
conn_init (struct conn *c, int fd, uint64_t size, uint64_t bs, unsigned qd,
           enum mode mode)
{
  unsigned i;
  unsigned char *bufs;

  memset (c, 0, sizeof *c);
  c->fd = fd;
  c->size = size;
  c->bs = bs;
  c->qd = qd;
  c->mode = mode;
  c->rng = 0x9e3779b97f4a7c15ull;
  c->direct = mode != RANDOM_WRITE && mode != RANDOM_MIX && bs >= DIRECT_MIN;
  if (getenv ("LIMIT_STAGE"))
    c->direct = false;
  if (getenv ("LIMIT_DIRECT") && mode != RANDOM_WRITE && mode != RANDOM_MIX)
    c->direct = true;
  c->one_per_send = getenv ("LIMIT_ONE_PER_SEND") != NULL;
  c->memset_reads = getenv ("LIMIT_MEMSET") != NULL;
  bufs = malloc ((size_t) bs * qd);
  c->stage = malloc (STAGE + bs + 16);
  if (bufs == NULL || c->stage == NULL)
    fail ("malloc");
  for (i = 0; i < bs * qd / 8; i++)
    ((uint64_t *) bufs)[i] = rng (&c->rng);
  for (i = 0; i < qd; i++) {
    c->slots[i].buf = bufs + (size_t) i * bs;
    put32 (c->slots[i].req, REQUEST_MAGIC);
    put16 (c->slots[i].req + 4, 0);
    put64 (c->slots[i].req + 8, i);       /* cookie = slot */
    put32 (c->slots[i].req + 24, (uint32_t) bs);
  }
}

/* Fills a free slot's request and queues it; false if there is nothing
 * left to request (copy mode at the end of the piece). */
static bool
issue (struct conn *c, unsigned i)
{
  struct slot *s = &c->slots[i];
  uint64_t off;

  switch (c->mode) {
  case SEQUENTIAL_READ:
    if (c->next >= c->end)
      return false;
    off = c->next;
    c->next += c->bs;
    s->write = false;
    break;
  case RANDOM_MIX:
    off = rng (&c->rng) % (c->size / c->bs) * c->bs;
    s->write = rng (&c->rng) & 1;
    break;
  default:
    off = rng (&c->rng) % (REGION / c->bs) * c->bs;
    s->write = c->mode == RANDOM_WRITE;
    break;
  }
  if (!s->write && c->memset_reads)
    memset (s->buf, 0, c->bs);
  put16 (s->req + 6, s->write ? CMD_WRITE : CMD_READ);
  put64 (s->req + 16, off);
  s->busy = true;
  c->outq[(c->out_head + c->out_len) % MAX_QD] = i;
  c->out_len++;
  c->issued++;
  return true;
}

/* Sends what is queued, in one sendmsg per call while the socket takes
 * it all. */
static void
flush (struct conn *c)
{
  while (c->out_len > 0) {
    struct iovec iov[MAX_IOV];
    struct msghdr msg = { .msg_iov = iov };
    size_t skip = c->out_done, total = 0;
    unsigned n = 0, k;
    ssize_t r;

    for (k = 0; k < c->out_len && n + 2 <= MAX_IOV && (k == 0 || !c->one_per_send); k++) {
      struct slot *s = &c->slots[c->outq[(c->out_head + k) % MAX_QD]];

      if (skip < 28) {
        iov[n].iov_base = s->req + skip;
        iov[n++].iov_len = 28 - skip;
        total += 28 - skip;
        skip = 0;
      }
      else
        skip -= 28;
      if (s->write) {
        iov[n].iov_base = s->buf + skip;
        iov[n++].iov_len = c->bs - skip;
        total += c->bs - skip;
      }
      skip = 0;
    }
    msg.msg_iovlen = n;
    r = sendmsg (c->fd, &msg, MSG_NOSIGNAL);
    if (r == -1) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return;
      if (errno == EINTR)
        continue;
      fail ("sendmsg");
    }
    /* Retire what went out. */
    {
      size_t left = (size_t) r + c->out_done;

      while (c->out_len > 0) {
        struct slot *s = &c->slots[c->outq[c->out_head]];
        size_t len = 28 + (s->write ? c->bs : 0);

        if (left < len)
          break;
        left -= len;
        c->out_head = (c->out_head + 1) % MAX_QD;
        c->out_len--;
      }
      c->out_done = left;
    }
    if ((size_t) r < total)
      return;                   /* the socket is full */
  }
}

static void
check_reply (struct conn *c, const unsigned char *h, unsigned *slot)
{
  uint64_t cookie;

  if (get32 (h) != SIMPLE_REPLY_MAGIC) {
    errno = 0;
    fail ("bad reply magic");
  }
  if (get32 (h + 4) != 0) {
    errno = (int) get32 (h + 4);
    fail ("the server failed a request");
  }
  cookie = get64 (h + 8);
  if (cookie >= c->qd || !c->slots[cookie].busy) {
    errno = 0;
    fail ("reply to an unknown cookie");
  }
  *slot = (unsigned) cookie;
}

static void
retire (struct conn *c, unsigned i)
{
  c->slots[i].busy = false;
  c->completed++;
}

/* Reads what the socket has (a closed connection is fatal). */
static void
receive (struct conn *c)
{
  for (;;) {
    ssize_t r;
    size_t want;

    if (c->direct) {
      struct iovec iov[2];
      int n = 0;

      if (c->pay_left) {
        iov[n].iov_base = c->pay;
        iov[n++].iov_len = c->pay_left;
      }
      iov[n].iov_base = c->hdr + c->hdr_got;
      iov[n++].iov_len = 16 - c->hdr_got;
      want = c->pay_left + 16 - c->hdr_got;
      r = readv (c->fd, iov, n);
    }
    else {
      want = STAGE + c->bs + 16 - c->stage_len;
      r = recv (c->fd, c->stage + c->stage_len, want, 0);
    }
    if (r == -1) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return;
      if (errno == EINTR)
        continue;
      fail ("recv");
    }
    if (r == 0) {
      errno = 0;
      fail ("the server closed the connection");
    }

    if (c->direct) {
      size_t got = (size_t) r;

      if (c->pay_left) {
        size_t n = got < c->pay_left ? got : c->pay_left;

        c->pay += n;
        c->pay_left -= n;
        got -= n;
        if (c->pay_left == 0)
          retire (c, c->pay_slot);
      }
      c->hdr_got += got;
      if (c->hdr_got == 16) {
        unsigned i;

        c->hdr_got = 0;
        check_reply (c, c->hdr, &i);
        if (c->slots[i].write)
          retire (c, i);
        else {
          c->pay = c->slots[i].buf;
          c->pay_left = c->bs;
          c->pay_slot = i;
        }
      }
    }
    else {
      size_t pos = 0;

      c->stage_len += (size_t) r;
      while (c->stage_len - pos >= 16) {
        unsigned i;
        size_t len;

        check_reply (c, c->stage + pos, &i);
        len = 16 + (c->slots[i].write ? 0 : c->bs);
        if (c->stage_len - pos < len)
          break;
        if (!c->slots[i].write)
          memcpy (c->slots[i].buf, c->stage + pos + 16, c->bs);
        retire (c, i);
        pos += len;
      }
      memmove (c->stage, c->stage + pos, c->stage_len - pos);
      c->stage_len -= pos;
    }
    if ((size_t) r < want)
      return;                   /* the socket is empty */
  }
}

static void
wait_once (struct conn *c)
{
  struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

  if (c->out_len)
    pfd.events |= POLLOUT;
  if (poll (&pfd, 1, -1) == -1) {
    if (errno == EINTR)
      return;
    fail ("poll");
  }
  if (pfd.revents & POLLOUT)
    flush (c);
  if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
    receive (c);
}

/* Keeps QD requests in flight until the deadline (random modes) or the
 * end of the piece (copy mode), then waits for the last replies. */
static void
drive (struct conn *c, double deadline)
{
  for (;;) {
    bool more = c->mode == SEQUENTIAL_READ ? c->next < c->end : now () < deadline;
    unsigned i;

    if (more)
      for (i = 0; i < c->qd; i++)
        if (!c->slots[i].busy && !issue (c, i))
          break;
    if (c->out_len)
      flush (c);
    if (!more && c->completed == c->issued)
      return;
    wait_once (c);
  }
}

static void
report (const char *name, uint64_t ops, uint64_t bytes, double secs, double cpu)
{
  printf ("result name=%s ops=%" PRIu64 " bytes=%" PRIu64 " secs=%.6f cpu=%.6f\n",
          name, ops, bytes, secs, cpu);
  fflush (stdout);
}

static void
run_sync (int fd, double seconds)
{
  const uint64_t bs = 4096;
  unsigned char req[28], hdr[16];
  unsigned char *buf = malloc (bs);
  uint64_t state = 0x9e3779b97f4a7c15ull, ops = 0;
  double t0, c0, t;

  if (buf == NULL)
    fail ("malloc");
  put32 (req, REQUEST_MAGIC);
  put16 (req + 4, 0);
  put16 (req + 6, CMD_READ);
  put32 (req + 24, (uint32_t) bs);
  c0 = cpu_seconds ();
  t0 = now ();
  do {
    struct iovec iov[2] = { { hdr, 16 }, { buf, bs } };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
    ssize_t r;

    put64 (req + 8, ops);
    put64 (req + 16, rng (&state) % (REGION / bs) * bs);
    write_all (fd, req, sizeof req);
    r = recvmsg (fd, &msg, MSG_WAITALL);
    if (r != (ssize_t) (16 + bs)) {
      if (r >= 0)
        errno = 0;
      fail ("recvmsg");
    }
    if (get32 (hdr) != SIMPLE_REPLY_MAGIC || get32 (hdr + 4) != 0 ||
        get64 (hdr + 8) != ops) {
      errno = 0;
      fail ("bad reply");
    }
    ops++;
  } while ((t = now ()) < t0 + seconds);
  report ("sync-pread-4k-qd1", ops, ops * bs, t - t0, cpu_seconds () - c0);
  free (buf);
}

/* ----- copy mode --------------------------------------------------------- */

struct copy {
  const char *uri;
  uint64_t size, bs;
  unsigned qd;
  uint64_t next_piece;          /* under lock */
  pthread_mutex_t lock;
  uint64_t ops;                 /* under lock */
};

static void *
copy_thread (void *arg)
{
  struct copy *cp = arg;
  struct conn *c = malloc (sizeof *c);
  uint64_t size;
  int fd;

  if (c == NULL)
    fail ("malloc");
  fd = nbd_open (cp->uri, &size);
  set_nonblock (fd, true);
  conn_init (c, fd, size, cp->bs, cp->qd, SEQUENTIAL_READ);
  for (;;) {
    pthread_mutex_lock (&cp->lock);
    c->next = cp->next_piece;
    cp->next_piece += PIECE;
    pthread_mutex_unlock (&cp->lock);
    if (c->next >= size)
      break;
    c->end = c->next + PIECE < size ? c->next + PIECE : size;
    drive (c, 0);
  }
  pthread_mutex_lock (&cp->lock);
  cp->ops += c->completed;
  pthread_mutex_unlock (&cp->lock);
  close (fd);
  return NULL;
}

static int
copy_main (const char *uri, unsigned conns, unsigned qd, uint64_t bs)
{
  struct copy cp = { .uri = uri, .bs = bs, .qd = qd,
                     .lock = PTHREAD_MUTEX_INITIALIZER };
  pthread_t th[64];
  char name[64];
  double t0, c0;
  unsigned i;
  int fd;

  if (conns < 1 || conns > 64 || qd < 1 || qd > MAX_QD || bs == 0 ||
      bs > 32 * 1024 * 1024) {
    fprintf (stderr, "limit: copy: bad CONNS, QD or BS\n");
    return EXIT_FAILURE;
  }
  fd = nbd_open (uri, &cp.size);
  close (fd);
  if (cp.size % bs) {
    fprintf (stderr, "limit: copy: the size is not a multiple of BS\n");
    return EXIT_FAILURE;
  }
  c0 = cpu_seconds ();
  t0 = now ();
  for (i = 0; i < conns; i++)
    if ((errno = pthread_create (&th[i], NULL, copy_thread, &cp)) != 0)
      fail ("pthread_create");
  for (i = 0; i < conns; i++)
    pthread_join (th[i], NULL);
  snprintf (name, sizeof name, "copy-%" PRIu64 "k-c%u-qd%u", bs / 1024, conns, qd);
  report (name, cp.ops, cp.ops * bs, now () - t0, cpu_seconds () - c0);
  return cp.ops * bs == cp.size ? EXIT_SUCCESS : EXIT_FAILURE;
}

int
main (int argc, char *argv[])
{
  struct conn *c;
  uint64_t size, bs;
  unsigned qd;
  double seconds, t0, c0;
  enum mode mode;
  char rw[8];
  int fd;

  if (argc == 6 && strcmp (argv[2], "copy") == 0)
    return copy_main (argv[1], (unsigned) atoi (argv[3]), (unsigned) atoi (argv[4]),
                      strtoull (argv[5], NULL, 0));
  if (argc != 4) {
    fprintf (stderr, "usage: %s URI SECONDS TEST\n"
             "       %s URI copy CONNS QD BS\n", argv[0], argv[0]);
    return EXIT_FAILURE;
  }
  seconds = atof (argv[2]);
  fd = nbd_open (argv[1], &size);
  printf ("library limit (no library)\n");

  if (strcmp (argv[3], "sync-pread-4k-qd1") == 0) {
    if (size < REGION) {
      fprintf (stderr, "limit: the export is smaller than 256 MiB\n");
      return EXIT_FAILURE;
    }
    run_sync (fd, seconds);
    close (fd);
    return EXIT_SUCCESS;
  }
  if (strcmp (argv[3], "randrw-4k-qd32") == 0) {
    mode = RANDOM_MIX;
    bs = 4096;
    qd = 32;
  }
  else {
    unsigned kib;

    if (sscanf (argv[3], "aio-%5[a-z]-%uk-qd%u", rw, &kib, &qd) != 3 ||
        (strcmp (rw, "read") != 0 && strcmp (rw, "write") != 0) ||
        qd < 1 || qd > MAX_QD || kib < 1 || kib > 32 * 1024) {
      fprintf (stderr, "limit: unknown test %s\n", argv[3]);
      return EXIT_FAILURE;
    }
    mode = rw[0] == 'w' ? RANDOM_WRITE : RANDOM_READ;
    bs = (uint64_t) kib * 1024;
    if (size < REGION) {
      fprintf (stderr, "limit: the export is smaller than 256 MiB\n");
      return EXIT_FAILURE;
    }
  }
  set_nonblock (fd, true);
  c = malloc (sizeof *c);
  if (c == NULL)
    fail ("malloc");
  conn_init (c, fd, size, bs, qd, mode);
  c0 = cpu_seconds ();
  t0 = now ();
  drive (c, t0 + seconds);
  report (argv[3], c->completed, c->completed * bs, now () - t0, cpu_seconds () - c0);
  close (fd);
  return EXIT_SUCCESS;
}
