/* kill-load: load a server with aio commands until it is killed.
 *
 *   kill-load load URI SEED
 *       Connects, then keeps 64 aio commands (64 KiB reads and writes at
 *       pseudo-random offsets) in flight, driven by nbd_poll, until the
 *       connection dies under it (the test kills the server with SIGKILL
 *       some time after "READY" is printed).  Every command's completion
 *       callback and .free are counted per command; the program then
 *       closes the handle and prints one RESULT line of counters and
 *       CLOCK_MONOTONIC times for the test to check.
 *
 *   kill-load sigpipe URI
 *       Keeps SIGPIPE at its default disposition (which kills the process
 *       on a write to a broken connection) and writes 32 MiB with nbd_pwrite
 *       again and again until a write fails (the test kills or resets the
 *       server after "READY").  Exiting with status 0 is the proof that the
 *       library never raised SIGPIPE.
 *
 * Exit status: 0 when the run finished (the test judges the counters),
 * 1 on an unexpected failure.
 */
#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#define SLOTS      64
#define CMD_SIZE   (64u * 1024)
#define EXPORT     (64ull * 1024 * 1024)
#define BIG_WRITE  (32u * 1024 * 1024)

struct slot;

/* One issued command. */
struct rec {
  struct rec *next;             /* all records, for the final check */
  struct slot *slot;
  unsigned calls;               /* completion callback calls */
  unsigned frees;               /* .free calls */
  int error;
};

struct slot {
  struct rec *cur;              /* NULL: free to issue */
  uint8_t *buf;
};

static struct rec *all;
static unsigned issued, completed, errors, ok_after_err, issue_failures;
static long long first_err_ns, last_completion_ns;

static long long
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (long long) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int
count_fds (void)
{
  DIR *d = opendir ("/proc/self/fd");
  struct dirent *e;
  int n = 0;

  if (d == NULL) {
    perror ("/proc/self/fd");
    exit (1);
  }
  while ((e = readdir (d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir (d);
  return n - 1;                 /* the directory's own descriptor */
}

static void
die (const char *what)
{
  fprintf (stderr, "kill-load: %s: %s (errno %d)\n", what,
           nbd_get_error () ? nbd_get_error () : "(no error)",
           nbd_get_errno ());
  exit (1);
}

static uint64_t rng;

static uint64_t
next_random (void)
{
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 0x2545f4914f6cdd1dull;
}

static int
on_complete (void *user_data, int *error)
{
  struct rec *r = user_data;

  r->calls++;
  r->error = *error;
  completed++;
  if (*error != 0) {
    if (errors++ == 0)
      first_err_ns = now_ns ();
  }
  else if (errors > 0)
    ok_after_err++;
  last_completion_ns = now_ns ();
  return 1;                     /* retire at once */
}

static void
on_free (void *user_data)
{
  struct rec *r = user_data;

  r->frees++;
  if (r->slot && r->slot->cur == r)
    r->slot->cur = NULL;
}

/* Issues one command in slot s; returns 0, or -1 if the call failed. */
static int
issue (struct nbd_handle *nbd, struct slot *s)
{
  struct rec *r = calloc (1, sizeof *r);
  uint64_t x = next_random ();
  uint64_t offset = (x % (EXPORT / CMD_SIZE)) * CMD_SIZE;
  nbd_completion_callback cb = { .callback = on_complete, .user_data = r,
                                 .free = on_free };
  int64_t cookie;

  if (r == NULL) {
    perror ("calloc");
    exit (1);
  }
  r->next = all;
  all = r;
  r->slot = s;
  s->cur = r;
  if (x & (1ull << 40)) {
    memset (s->buf, (int) (x >> 48), CMD_SIZE);
    cookie = nbd_aio_pwrite (nbd, s->buf, CMD_SIZE, offset, cb, 0);
  }
  else
    cookie = nbd_aio_pread (nbd, s->buf, CMD_SIZE, offset, cb, 0);
  if (cookie == -1) {
    /* The library calls .free even when the call fails. */
    issue_failures++;
    r->slot = NULL;
    if (s->cur == r)
      s->cur = NULL;
    return -1;
  }
  issued++;
  return 0;
}

static int
load (const char *uri, const char *seed)
{
  struct slot slots[SLOTS];
  struct nbd_handle *nbd;
  int fds_before, fds_after, dead, in_flight, i, idle = 0, stop = 0;
  unsigned bad_calls = 0, bad_frees = 0, records = 0;
  long long poll_fail_ns = 0;
  struct rec *r;

  rng = strtoull (seed, NULL, 0) | 1;
  for (i = 0; i < SLOTS; i++) {
    slots[i].cur = NULL;
    slots[i].buf = malloc (CMD_SIZE);
    if (slots[i].buf == NULL) {
      perror ("malloc");
      return 1;
    }
  }

  fds_before = count_fds ();
  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");
  /* The TLS runs name a PSK file in the URI. */
  if (nbd_set_uri_allow_local_file (nbd, true) == -1)
    die ("nbd_set_uri_allow_local_file");
  if (nbd_connect_uri (nbd, uri) == -1)
    die ("nbd_connect_uri");

  for (i = 0; i < SLOTS; i++)
    if (issue (nbd, &slots[i]) == -1)
      die ("first commands");
  printf ("READY\n");
  fflush (stdout);

  for (;;) {
    if (!stop) {
      for (i = 0; i < SLOTS; i++)
        if (slots[i].cur == NULL && issue (nbd, &slots[i]) == -1) {
          stop = 1;
          break;
        }
    }
    in_flight = nbd_aio_in_flight (nbd);
    if (stop && in_flight <= 0)
      break;
    if (nbd_poll (nbd, 1000) == -1) {
      stop = 1;
      if (poll_fail_ns == 0)
        poll_fail_ns = now_ns ();
      if (nbd_aio_in_flight (nbd) <= 0)
        break;
      /* A dead handle with commands still in flight would loop here. */
      if (now_ns () - poll_fail_ns > 2000000000LL) {
        fprintf (stderr, "kill-load: %d commands still in flight 2 s after "
                 "nbd_poll failed\n", nbd_aio_in_flight (nbd));
        break;
      }
    }
    else if (stop && ++idle > 5) {
      fprintf (stderr, "kill-load: stuck with %d in flight\n",
               nbd_aio_in_flight (nbd));
      break;
    }
  }

  dead = nbd_aio_is_dead (nbd);
  in_flight = nbd_aio_in_flight (nbd);
  nbd_close (nbd);
  fds_after = count_fds ();

  for (r = all; r != NULL; ) {
    struct rec *next = r->next;
    records++;
    if (r->frees != 1)
      bad_frees++;
    /* Issued commands get exactly one completion call, failed issues none. */
    if (r->calls != (r->slot != NULL ? 1u : 0u))
      bad_calls++;
    free (r);
    r = next;
  }
  for (i = 0; i < SLOTS; i++)
    free (slots[i].buf);

  printf ("RESULT issued=%u completed=%u errors=%u ok_after_err=%u "
          "issue_failures=%u records=%u bad_calls=%u bad_frees=%u dead=%d "
          "in_flight=%d fds_before=%d fds_after=%d first_err_ns=%lld "
          "last_completion_ns=%lld\n",
          issued, completed, errors, ok_after_err, issue_failures, records,
          bad_calls, bad_frees, dead, in_flight, fds_before, fds_after,
          first_err_ns, last_completion_ns);
  return 0;
}

static int
sigpipe (const char *uri)
{
  struct nbd_handle *nbd;
  struct sigaction sa;
  uint8_t *buf;
  unsigned writes = 0;
  int r;

  /* Make sure SIGPIPE would kill us. */
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  sigemptyset (&sa.sa_mask);
  if (sigaction (SIGPIPE, &sa, NULL) == -1) {
    perror ("sigaction");
    return 1;
  }
  buf = malloc (BIG_WRITE);
  if (buf == NULL) {
    perror ("malloc");
    return 1;
  }
  memset (buf, 0x5a, BIG_WRITE);
  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");
  if (nbd_connect_uri (nbd, uri) == -1)
    die ("nbd_connect_uri");
  printf ("READY\n");
  fflush (stdout);
  for (;;) {
    r = nbd_pwrite (nbd, buf, BIG_WRITE, (uint64_t) (writes % 2) * BIG_WRITE,
                    0);
    if (r == -1)
      break;
    writes++;
  }
  printf ("SURVIVED writes=%u errno=%d dead=%d\n", writes, nbd_get_errno (),
          nbd_aio_is_dead (nbd));
  nbd_close (nbd);
  free (buf);
  return 0;
}

int
main (int argc, char *argv[])
{
  if (argc == 4 && strcmp (argv[1], "load") == 0)
    return load (argv[2], argv[3]);
  if (argc == 3 && strcmp (argv[1], "sigpipe") == 0)
    return sigpipe (argv[2]);
  fprintf (stderr, "usage: kill-load load URI SEED | kill-load sigpipe URI\n");
  return 1;
}
