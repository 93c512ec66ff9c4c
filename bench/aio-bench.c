/* aio-bench: throughput and client CPU of the asynchronous API, and
 * latency of the synchronous one, on one connection.
 *
 *   aio-bench URI SECONDS            write the region, then run every test
 *   aio-bench URI SECONDS TEST       run one test (e.g. aio-read-64k-qd1)
 *   aio-bench URI 0 fill             only write the region
 *
 * Tests aio-{read,write}-{4,64,1024}k-qd{1,16,64}: keep QD commands of
 * that size in flight for SECONDS, driving the handle from our own poll(2)
 * loop with nbd_aio_get_fd, nbd_aio_get_direction and
 * nbd_aio_notify_read/_write; completion callbacks retire the commands and
 * the loop issues new ones.  Test sync-pread-4k-qd1: synchronous 4 KiB
 * nbd_pread calls for SECONDS.  Offsets are random, aligned to the request
 * size, inside the first 256 MiB of the export, which is written once
 * first ("fill") so that the server's state does not change under the
 * tests.
 *
 * Client CPU is this process's own getrusage (RUSAGE_SELF, user + system)
 * over each test: the server's CPU is never counted.  One line per test:
 *
 *   result name=aio-read-4k-qd16 ops=N bytes=B secs=S cpu=C
 *
 * The program runs unchanged on any libnbd: bench/run.sh runs each test on
 * every library in turn, switching only libnbd.so.0 under one loader, and
 * bench/limit.c runs the same tests with no library at all.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <libnbd.h>

#include "clock.h"

#define REGION (256ull * 1024 * 1024)

struct slot {
  bool busy;
  unsigned *completed;
  unsigned *failed;
};

static void
die (const char *what)
{
  fprintf (stderr, "aio-bench: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}


static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rng (void)
{
  uint64_t x = rng_state;

  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  rng_state = x;
  return x;
}

static uint64_t
random_offset (uint64_t region, uint64_t bs)
{
  return (rng () % (region / bs)) * bs;
}

static int
done_cb (void *user_data, int *error)
{
  struct slot *s = user_data;

  s->busy = false;
  (*s->completed)++;
  if (*error)
    (*s->failed)++;
  return 1;                     /* retire the command now */
}

/* Waits for the socket in the direction the library wants, then tells it. */
static void
step (struct nbd_handle *nbd, int fd)
{
  struct pollfd pfd;
  unsigned dir;
  int r = 0;

  dir = nbd_aio_get_direction (nbd);
  pfd.fd = fd;
  pfd.events = 0;
  pfd.revents = 0;
  if (dir & LIBNBD_AIO_DIRECTION_READ)
    pfd.events |= POLLIN;
  if (dir & LIBNBD_AIO_DIRECTION_WRITE)
    pfd.events |= POLLOUT;
  if (pfd.events == 0) {
    fprintf (stderr, "aio-bench: nothing to wait for (state %s)\n",
             nbd_connection_state (nbd));
    exit (EXIT_FAILURE);
  }
  if (poll (&pfd, 1, -1) == -1) {
    if (errno == EINTR)
      return;
    perror ("poll");
    exit (EXIT_FAILURE);
  }
  if ((dir & LIBNBD_AIO_DIRECTION_READ) &&
      (pfd.revents & (POLLIN | POLLHUP | POLLERR)))
    r = nbd_aio_notify_read (nbd);
  else if ((dir & LIBNBD_AIO_DIRECTION_WRITE) &&
           (pfd.revents & (POLLOUT | POLLHUP | POLLERR)))
    r = nbd_aio_notify_write (nbd);
  if (r == -1)
    die ("notify");
}

static void
report (const char *name, uint64_t ops, uint64_t bytes, double secs,
        double cpu)
{
  printf ("result name=%s ops=%" PRIu64 " bytes=%" PRIu64
          " secs=%.6f cpu=%.6f\n", name, ops, bytes, secs, cpu);
  fflush (stdout);
}

static const char *only;

static bool
selected (const char *name)
{
  return only == NULL || strcmp (name, only) == 0;
}

static void
run_aio (struct nbd_handle *nbd, int fd, uint8_t *bufs, uint64_t bs,
         unsigned qd, bool write, double seconds, uint64_t region)
{
  struct slot slots[64];
  unsigned completed = 0, failed = 0, issued = 0, i;
  double t0, c0, deadline, t1, c1;
  char name[64];

  snprintf (name, sizeof name, "aio-%s-%" PRIu64 "k-qd%u",
            write ? "write" : "read", bs / 1024, qd);
  if (!selected (name))
    return;

  for (i = 0; i < qd; i++) {
    slots[i].busy = false;
    slots[i].completed = &completed;
    slots[i].failed = &failed;
  }

  c0 = cpu_seconds ();
  t0 = now ();
  deadline = t0 + seconds;
  for (;;) {
    bool more = now () < deadline;

    if (more) {
      for (i = 0; i < qd; i++) {
        nbd_completion_callback cb = { .callback = done_cb,
                                       .user_data = &slots[i] };
        uint8_t *buf = bufs + (size_t) i * bs;
        uint64_t off;
        int64_t cookie;

        if (slots[i].busy)
          continue;
        off = random_offset (region, bs);
        slots[i].busy = true;
        if (write)
          cookie = nbd_aio_pwrite (nbd, buf, bs, off, cb, 0);
        else
          cookie = nbd_aio_pread (nbd, buf, bs, off, cb, 0);
        if (cookie == -1)
          die (write ? "nbd_aio_pwrite" : "nbd_aio_pread");
        issued++;
      }
    }
    else if (completed == issued)
      break;
    if (completed < issued)
      step (nbd, fd);
  }
  t1 = now ();
  c1 = cpu_seconds ();

  if (failed) {
    fprintf (stderr, "aio-bench: %u commands failed\n", failed);
    exit (EXIT_FAILURE);
  }
  report (name, completed, (uint64_t) completed * bs, t1 - t0, c1 - c0);
}

static void
run_sync (struct nbd_handle *nbd, uint8_t *buf, double seconds,
          uint64_t region)
{
  const uint64_t bs = 4096;
  uint64_t ops = 0;
  double t0, c0, deadline, t, c1;

  if (!selected ("sync-pread-4k-qd1"))
    return;
  c0 = cpu_seconds ();
  t0 = now ();
  deadline = t0 + seconds;
  do {
    if (nbd_pread (nbd, buf, bs, random_offset (region, bs), 0) == -1)
      die ("nbd_pread");
    ops++;
  } while ((t = now ()) < deadline);
  c1 = cpu_seconds ();
  report ("sync-pread-4k-qd1", ops, ops * bs, t - t0, c1 - c0);
}

static void
fill_region (struct nbd_handle *nbd, uint8_t *buf, uint64_t region)
{
  uint64_t off;

  for (off = 0; off < region; off += 1048576)
    if (nbd_pwrite (nbd, buf, 1048576, off, 0) == -1)
      die ("nbd_pwrite");
}

int
main (int argc, char *argv[])
{
  static const uint64_t sizes[] = { 4096, 65536, 1048576 };
  static const unsigned depths[] = { 1, 16, 64 };
  struct nbd_handle *nbd;
  uint64_t *bufs;
  uint64_t region = REGION, need = 0;
  int64_t size;
  double seconds;
  size_t i, j, k;
  bool all, fill;
  int fd;

  if (argc < 3 || argc > 4) {
    fprintf (stderr, "usage: %s URI SECONDS [TEST|fill]\n", argv[0]);
    return EXIT_FAILURE;
  }
  seconds = atof (argv[2]);
  only = argc == 4 ? argv[3] : NULL;
  all = only == NULL;
  fill = all || strcmp (only, "fill") == 0;

  /* Buffers: QD x request size for the tests that will run. */
  for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    for (j = 0; j < sizeof depths / sizeof depths[0]; j++)
      for (k = 0; k < 2; k++) {
        char name[64];

        snprintf (name, sizeof name, "aio-%s-%" PRIu64 "k-qd%u",
                  k ? "write" : "read", sizes[i] / 1024, depths[j]);
        if (selected (name) && sizes[i] * depths[j] > need)
          need = sizes[i] * depths[j];
      }
  if (fill && need < 1048576)
    need = 1048576;
  if (selected ("sync-pread-4k-qd1") && need < 4096)
    need = 4096;
  if (need == 0) {
    fprintf (stderr, "aio-bench: unknown test %s\n", only);
    return EXIT_FAILURE;
  }

  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");
  if (nbd_connect_uri (nbd, argv[1]) == -1)
    die ("nbd_connect_uri");
  printf ("library %s %s\n", nbd_get_package_name (nbd),
          nbd_get_version (nbd));
  size = nbd_get_size (nbd);
  if (size == -1)
    die ("nbd_get_size");
  if ((uint64_t) size < region)
    region = (uint64_t) size;
  region -= region % 1048576;
  if (region < 1048576) {
    fprintf (stderr, "aio-bench: export smaller than 1 MiB\n");
    return EXIT_FAILURE;
  }
  fd = nbd_aio_get_fd (nbd);
  if (fd == -1)
    die ("nbd_aio_get_fd");

  bufs = malloc (need);
  if (bufs == NULL) {
    perror ("malloc");
    return EXIT_FAILURE;
  }
  for (i = 0; i < need / 8; i++)
    bufs[i] = rng ();

  if (fill)
    fill_region (nbd, (uint8_t *) bufs, region);
  for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    for (j = 0; j < sizeof depths / sizeof depths[0]; j++)
      for (k = 0; k < 2; k++)
        run_aio (nbd, fd, (uint8_t *) bufs, sizes[i], depths[j], k == 1,
                 seconds, region);
  run_sync (nbd, (uint8_t *) bufs, seconds, region);

  if (nbd_shutdown (nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (nbd);
  free (bufs);
  return EXIT_SUCCESS;
}
