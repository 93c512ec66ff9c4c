/* threads-stress: 8 threads share one handle for a bounded time.
 *
 *   threads-stress URI SECONDS
 *
 * Each thread owns 1/8 of the export and keeps a shadow copy of it.  It
 * loops, picking at random: nbd_pwrite then nbd_pread of a random range;
 * nbd_aio_pwrite then nbd_aio_pread, each waited for with
 * nbd_aio_command_completed and nbd_poll (any thread's nbd_poll may run
 * another thread's completion); or nbd_pread_structured.  Every read is
 * checked against the shadow copy.
 *
 * Thread-local errors: thread 0 provokes EINVAL (bad flags to nbd_pread)
 * and thread 1 an error of another function (nbd_set_export_name while
 * connected); while they hold their errors, the other threads do more
 * commands and check that their own nbd_get_errno()/nbd_get_error() still
 * say "no error" (0, NULL); then threads 0 and 1 check that they still see
 * their own error, not the other's.
 *
 * Prints "OK ops=N aio=N verified=N" and exits 0, or prints what went
 * wrong and exits 1.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#define THREADS   8
#define MAX_IO    (64u * 1024)

static struct nbd_handle *nbd;
static uint64_t region;
static double seconds;
static atomic_uint failures, ops, aio_ops, verified;
static atomic_int provoked, acks;

#define FAIL(...) do {                                  \
    fprintf (stderr, __VA_ARGS__);                      \
    fprintf (stderr, "\n");                             \
    atomic_fetch_add (&failures, 1);                    \
  } while (0)

struct thread {
  int id;
  pthread_t tid;
  uint64_t rng;
  uint8_t *shadow;
  uint8_t *buf;
  uint8_t *rbuf;
};

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t
rnd (struct thread *t)
{
  t->rng ^= t->rng >> 12;
  t->rng ^= t->rng << 25;
  t->rng ^= t->rng >> 27;
  return t->rng * 0x2545f4914f6cdd1dull;
}

/* This thread has never failed a call: no error must be visible. */
static int
no_error_here (struct thread *t, const char *when)
{
  if (nbd_get_errno () != 0 || nbd_get_error () != NULL) {
    FAIL ("thread %d, %s: sees errno %d / %s from another thread", t->id,
          when, nbd_get_errno (),
          nbd_get_error () ? nbd_get_error () : "NULL");
    return 0;
  }
  return 1;
}

static int
completion (void *user_data, int *error)
{
  int *done = user_data;

  *done = *error ? -*error - 1 : 1;
  return 0;                     /* retired by nbd_aio_command_completed */
}

/* Waits for an aio command; returns 0 or -1. */
static int
wait_for (struct thread *t, int64_t cookie, int *done, const char *what)
{
  int r;

  while ((r = nbd_aio_command_completed (nbd, cookie)) == 0) {
    if (nbd_poll (nbd, 10) == -1) {
      FAIL ("thread %d: nbd_poll: %s", t->id, nbd_get_error ());
      return -1;
    }
  }
  if (r == -1) {
    FAIL ("thread %d: %s failed: %s", t->id, what, nbd_get_error ());
    return -1;
  }
  if (*done != 1) {
    FAIL ("thread %d: %s completion callback saw %d", t->id, what, *done);
    return -1;
  }
  atomic_fetch_add (&aio_ops, 1);
  return 0;
}

static int
chunk_cb (void *user_data, const void *subbuf, size_t count, uint64_t offset,
          unsigned status, int *error)
{
  (void) user_data; (void) subbuf; (void) count; (void) offset;
  (void) status; (void) error;
  return 0;
}

static void
verify (struct thread *t, uint64_t off, size_t len, const char *how)
{
  if (memcmp (t->rbuf, t->shadow + (off - region * t->id), len) != 0)
    FAIL ("thread %d: %s of %zu bytes at %" PRIu64 " returned wrong data",
          t->id, how, len, off);
  else
    atomic_fetch_add (&verified, 1);
}

static void
one_op (struct thread *t)
{
  size_t len = 1 + rnd (t) % MAX_IO;
  uint64_t rel = rnd (t) % (region - len + 1);
  uint64_t off = region * t->id + rel;
  unsigned kind = rnd (t) % 3;
  size_t i;
  int done;
  int64_t c;

  for (i = 0; i < len; i++)
    t->buf[i] = (uint8_t) rnd (t);

  switch (kind) {
  case 0:                       /* synchronous */
    if (nbd_pwrite (nbd, t->buf, len, off, 0) == -1) {
      FAIL ("thread %d: nbd_pwrite: %s", t->id, nbd_get_error ());
      return;
    }
    memcpy (t->shadow + rel, t->buf, len);
    if (nbd_pread (nbd, t->rbuf, len, off, 0) == -1) {
      FAIL ("thread %d: nbd_pread: %s", t->id, nbd_get_error ());
      return;
    }
    verify (t, off, len, "nbd_pread");
    break;
  case 1:                       /* asynchronous */
    done = 0;
    c = nbd_aio_pwrite (nbd, t->buf, len, off,
                        (nbd_completion_callback) { .callback = completion,
                                                    .user_data = &done }, 0);
    if (c == -1 || wait_for (t, c, &done, "nbd_aio_pwrite") == -1) {
      if (c == -1)
        FAIL ("thread %d: nbd_aio_pwrite: %s", t->id, nbd_get_error ());
      return;
    }
    memcpy (t->shadow + rel, t->buf, len);
    done = 0;
    c = nbd_aio_pread (nbd, t->rbuf, len, off,
                       (nbd_completion_callback) { .callback = completion,
                                                   .user_data = &done }, 0);
    if (c == -1 || wait_for (t, c, &done, "nbd_aio_pread") == -1) {
      if (c == -1)
        FAIL ("thread %d: nbd_aio_pread: %s", t->id, nbd_get_error ());
      return;
    }
    verify (t, off, len, "nbd_aio_pread");
    break;
  default:                      /* structured read of what is there */
    if (nbd_pread_structured (nbd, t->rbuf, len, off,
                              (nbd_chunk_callback) { .callback = chunk_cb },
                              0) == -1) {
      FAIL ("thread %d: nbd_pread_structured: %s", t->id, nbd_get_error ());
      return;
    }
    verify (t, off, len, "nbd_pread_structured");
    break;
  }
  atomic_fetch_add (&ops, 1);
}

/* Threads 0 and 1: fail a call, wait while the others work, check that
 * the error is still this thread's own.
 */
static void
provoke (struct thread *t)
{
  const char *want_fn = t->id == 0 ? "nbd_pread" : "nbd_set_export_name";
  char *msg;
  int err, r;
  double deadline;

  if (t->id == 0)
    r = nbd_pread (nbd, t->rbuf, 512, 0, 0x40000000u);
  else
    r = nbd_set_export_name (nbd, "other");
  if (r != -1) {
    FAIL ("thread %d: %s with a bad argument succeeded", t->id, want_fn);
    return;
  }
  err = nbd_get_errno ();
  msg = nbd_get_error () ? strdup (nbd_get_error ()) : NULL;
  if (msg == NULL || strstr (msg, want_fn) == NULL) {
    FAIL ("thread %d: error message %s does not name %s", t->id,
          msg ? msg : "NULL", want_fn);
    free (msg);
    return;
  }
  if (t->id == 0 && err != EINVAL)
    FAIL ("thread 0: errno %d, expected EINVAL", err);
  atomic_fetch_add (&provoked, 1);
  /* No libnbd call here: the error must stay as it is. */
  deadline = now () + 5;
  while (atomic_load (&acks) < THREADS - 2 && now () < deadline)
    nanosleep (&(struct timespec) { .tv_nsec = 1000000 }, NULL);
  if (atomic_load (&acks) < THREADS - 2)
    FAIL ("thread %d: the other threads did not get on", t->id);
  if (nbd_get_errno () != err || nbd_get_error () == NULL ||
      strcmp (nbd_get_error (), msg) != 0)
    FAIL ("thread %d: its error changed to %d / %s (was %d / %s)", t->id,
          nbd_get_errno (), nbd_get_error () ? nbd_get_error () : "NULL",
          err, msg);
  else
    printf ("thread %d keeps its own error: %d %s\n", t->id, err, msg);
  free (msg);
}

static void *
run (void *arg)
{
  struct thread *t = arg;
  double end = now () + seconds;
  int acked = 0;
  unsigned n = 0;

  no_error_here (t, "at start");
  while (now () < end || (!acked && t->id >= 2) || n < 4) {
    if (t->id < 2 && n == 3)
      provoke (t);
    one_op (t);
    n++;
    if (t->id >= 2) {
      if (!no_error_here (t, "after a command"))
        break;
      if (!acked && atomic_load (&provoked) == 2) {
        acked = 1;
        atomic_fetch_add (&acks, 1);
      }
    }
    if (atomic_load (&failures) > 10)
      break;
    if (now () > end + 10) {
      FAIL ("thread %d: still waiting for the error check", t->id);
      break;
    }
  }
  return NULL;
}

int
main (int argc, char *argv[])
{
  struct thread th[THREADS];
  int64_t size;
  int i;

  if (argc != 3) {
    fprintf (stderr, "usage: threads-stress URI SECONDS\n");
    return 1;
  }
  seconds = atof (argv[2]);
  nbd = nbd_create ();
  /* (The TLS run names a PSK file in the URI.) */
  if (nbd == NULL || nbd_set_uri_allow_local_file (nbd, true) == -1 ||
      nbd_connect_uri (nbd, argv[1]) == -1) {
    fprintf (stderr, "connect: %s\n", nbd_get_error ());
    return 1;
  }
  size = nbd_get_size (nbd);
  if (size < THREADS * MAX_IO) {
    fprintf (stderr, "export too small: %" PRId64 "\n", size);
    return 1;
  }
  region = (uint64_t) size / THREADS;
  for (i = 0; i < THREADS; i++) {
    th[i].id = i;
    th[i].rng = 0x9e3779b97f4a7c15ull * (i + 1);
    th[i].shadow = malloc (region);
    th[i].buf = malloc (MAX_IO);
    th[i].rbuf = malloc (MAX_IO);
    if (!th[i].shadow || !th[i].buf || !th[i].rbuf) {
      perror ("malloc");
      return 1;
    }
    /* The export starts zeroed; make it so in case it was not. */
    memset (th[i].shadow, 0, region);
    if (nbd_zero (nbd, region, region * i, 0) == -1) {
      fprintf (stderr, "nbd_zero: %s\n", nbd_get_error ());
      return 1;
    }
  }
  for (i = 0; i < THREADS; i++)
    if (pthread_create (&th[i].tid, NULL, run, &th[i]) != 0) {
      perror ("pthread_create");
      return 1;
    }
  for (i = 0; i < THREADS; i++) {
    pthread_join (th[i].tid, NULL);
    free (th[i].shadow);
    free (th[i].buf);
    free (th[i].rbuf);
  }
  if (nbd_shutdown (nbd, 0) == -1) {
    fprintf (stderr, "nbd_shutdown: %s\n", nbd_get_error ());
    atomic_fetch_add (&failures, 1);
  }
  nbd_close (nbd);
  if (atomic_load (&failures) > 0) {
    printf ("FAILED failures=%u\n", atomic_load (&failures));
    return 1;
  }
  printf ("OK ops=%u aio=%u verified=%u\n", atomic_load (&ops),
          atomic_load (&aio_ops), atomic_load (&verified));
  return 0;
}
