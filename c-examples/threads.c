/* threads: several POSIX threads share one libnbd handle.
 *
 * Each thread owns a slice of the first 8 MiB of the export (or of the
 * whole export when it is smaller).  It walks its slice block by block
 * several times, writing data stamped with its thread number, block and
 * round, then reading the block back and checking it.  All threads run
 * at once, so their commands interleave on the single connection.  At
 * the end the main thread reads the whole area and checks that every
 * slice holds its owner's last round.
 *
 *   threads nbd://localhost
 *   threads /tmp/nbd.sock
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#define NR_THREADS 8u
#define ROUNDS     3u
#define BLOCK      (32u * 1024)
#define AREA_MAX   (8u * 1024 * 1024)

struct worker {
  pthread_t tid;
  struct nbd_handle *nbd;
  unsigned id;
  uint64_t start;               /* first byte of the slice */
  uint64_t len;                 /* bytes in the slice, a multiple of BLOCK */
  unsigned blocks_checked;
  int failed;
};

static void
die (const char *what)
{
  fprintf (stderr, "threads: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}

static int
connect_target (struct nbd_handle *nbd, const char *target)
{
  if (strstr (target, "://") != NULL)
    return nbd_connect_uri (nbd, target);
  return nbd_connect_unix (nbd, target);
}

/* Data for one block: every 8-byte word holds the thread id, the round
 * and the absolute offset of the word, so misplaced or stale data is
 * caught.
 */
static void
stamp (uint8_t *buf, unsigned id, unsigned round, uint64_t offset)
{
  size_t i;

  for (i = 0; i < BLOCK; i += 8) {
    uint64_t o = offset + i;

    buf[i] = (uint8_t) id;
    buf[i + 1] = (uint8_t) round;
    buf[i + 2] = (uint8_t) (o >> 40);
    buf[i + 3] = (uint8_t) (o >> 32);
    buf[i + 4] = (uint8_t) (o >> 24);
    buf[i + 5] = (uint8_t) (o >> 16);
    buf[i + 6] = (uint8_t) (o >> 8);
    buf[i + 7] = (uint8_t) o;
  }
}

static void *
work (void *arg)
{
  struct worker *w = arg;
  uint8_t *out = malloc (BLOCK), *in = malloc (BLOCK);
  unsigned round;
  uint64_t off;

  if (out == NULL || in == NULL) {
    fprintf (stderr, "threads: thread %u: out of memory\n", w->id);
    w->failed = 1;
    goto done;
  }

  for (round = 1; round <= ROUNDS; round++) {
    for (off = w->start; off < w->start + w->len; off += BLOCK) {
      stamp (out, w->id, round, off);
      if (nbd_pwrite (w->nbd, out, BLOCK, off, 0) == -1) {
        /* nbd_get_error is per thread, so this is our error. */
        fprintf (stderr, "threads: thread %u: nbd_pwrite: %s\n",
                 w->id, nbd_get_error ());
        w->failed = 1;
        goto done;
      }
      memset (in, 0, BLOCK);
      if (nbd_pread (w->nbd, in, BLOCK, off, 0) == -1) {
        fprintf (stderr, "threads: thread %u: nbd_pread: %s\n",
                 w->id, nbd_get_error ());
        w->failed = 1;
        goto done;
      }
      if (memcmp (in, out, BLOCK) != 0) {
        fprintf (stderr, "threads: thread %u: round %u: block at %" PRIu64
                 " read back different data\n", w->id, round, off);
        w->failed = 1;
        goto done;
      }
      w->blocks_checked++;
    }
  }

 done:
  free (out);
  free (in);
  return NULL;
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *nbd;
  struct worker workers[NR_THREADS];
  uint64_t area, slice;
  uint8_t *want, *got;
  int64_t size;
  unsigned i;
  int failed = 0, err;

  if (argc != 2) {
    fprintf (stderr, "usage: %s NBD-URI|UNIX-SOCKET\n", argv[0]);
    return EXIT_FAILURE;
  }

  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");
  if (connect_target (nbd, argv[1]) == -1)
    die ("connect");

  size = nbd_get_size (nbd);
  if (size == -1)
    die ("nbd_get_size");
  area = (uint64_t) size < AREA_MAX ? (uint64_t) size : AREA_MAX;
  slice = area / NR_THREADS / BLOCK * BLOCK;
  if (slice == 0) {
    fprintf (stderr, "threads: export too small\n");
    exit (EXIT_FAILURE);
  }

  for (i = 0; i < NR_THREADS; i++) {
    workers[i].nbd = nbd;
    workers[i].id = i;
    workers[i].start = i * slice;
    workers[i].len = slice;
    workers[i].blocks_checked = 0;
    workers[i].failed = 0;
    err = pthread_create (&workers[i].tid, NULL, work, &workers[i]);
    if (err != 0) {
      fprintf (stderr, "threads: pthread_create: %s\n", strerror (err));
      exit (EXIT_FAILURE);
    }
  }
  for (i = 0; i < NR_THREADS; i++) {
    err = pthread_join (workers[i].tid, NULL);
    if (err != 0) {
      fprintf (stderr, "threads: pthread_join: %s\n", strerror (err));
      exit (EXIT_FAILURE);
    }
    printf ("thread %u: %u blocks written and verified\n",
            i, workers[i].blocks_checked);
    failed |= workers[i].failed;
  }
  if (failed) {
    fprintf (stderr, "threads: a thread failed\n");
    exit (EXIT_FAILURE);
  }

  /* Final check of every slice, from the main thread. */
  want = malloc (BLOCK);
  got = malloc (BLOCK);
  if (want == NULL || got == NULL) {
    perror ("malloc");
    exit (EXIT_FAILURE);
  }
  for (i = 0; i < NR_THREADS; i++) {
    uint64_t off;

    for (off = workers[i].start; off < workers[i].start + slice; off += BLOCK) {
      stamp (want, i, ROUNDS, off);
      if (nbd_pread (nbd, got, BLOCK, off, 0) == -1)
        die ("nbd_pread");
      if (memcmp (want, got, BLOCK) != 0) {
        fprintf (stderr, "threads: final check: block at %" PRIu64
                 " does not hold thread %u's last round\n", off, i);
        exit (EXIT_FAILURE);
      }
    }
  }
  printf ("final check: %" PRIu64 " bytes verified\n", slice * NR_THREADS);

  free (want);
  free (got);
  if (nbd_shutdown (nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (nbd);
  printf ("threads: OK\n");
  return EXIT_SUCCESS;
}
