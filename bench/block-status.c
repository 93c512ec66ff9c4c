/* block-status: time nbd_block_status ("base:allocation") over a whole
 * export, from offset 0 to the end, REPEATS times.
 *
 *   block-status URI REPEATS
 *
 * Each request asks for up to 2 GiB; the next one starts where the
 * extents returned so far end (a server may answer with less).  Prints
 *
 *   result name=block-status scans=R ops=REQUESTS extents=E secs=S cpu=C
 *
 * where cpu is this process's own user + system time (getrusage).
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <libnbd.h>

#include "clock.h"

struct scan {
  uint64_t covered;             /* bytes described by the last reply */
  uint64_t extents;
};

static void
die (const char *what)
{
  fprintf (stderr, "block-status: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}


static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr_entries, int *error)
{
  struct scan *s = user_data;
  size_t i;

  (void) offset;
  (void) error;
  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (i = 0; i + 1 < nr_entries; i += 2)
    s->covered += entries[i];
  s->extents += nr_entries / 2;
  return 0;
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *nbd;
  struct scan s = { 0, 0 };
  uint64_t requests = 0, offset;
  int64_t size;
  double t0, c0, t1, c1;
  long repeats, r;

  if (argc != 3) {
    fprintf (stderr, "usage: %s URI REPEATS\n", argv[0]);
    return EXIT_FAILURE;
  }
  repeats = atol (argv[2]);

  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");
  if (nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1)
    die ("nbd_add_meta_context");
  if (nbd_connect_uri (nbd, argv[1]) == -1)
    die ("nbd_connect_uri");
  printf ("library %s %s\n", nbd_get_package_name (nbd),
          nbd_get_version (nbd));
  if (nbd_can_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1) {
    fprintf (stderr, "block-status: the server has no base:allocation\n");
    return EXIT_FAILURE;
  }
  size = nbd_get_size (nbd);
  if (size == -1)
    die ("nbd_get_size");

  c0 = cpu_seconds ();
  t0 = now ();
  for (r = 0; r < repeats; r++) {
    offset = 0;
    while (offset < (uint64_t) size) {
      uint64_t count = (uint64_t) size - offset;
      nbd_extent_callback cb = { .callback = extent_cb, .user_data = &s };

      if (count > 0x80000000ull)
        count = 0x80000000ull;
      s.covered = 0;
      if (nbd_block_status (nbd, count, offset, cb, 0) == -1)
        die ("nbd_block_status");
      requests++;
      if (s.covered == 0) {
        fprintf (stderr, "block-status: no progress at %" PRIu64 "\n",
                 offset);
        return EXIT_FAILURE;
      }
      offset += s.covered;
    }
  }
  t1 = now ();
  c1 = cpu_seconds ();
  printf ("result name=block-status scans=%ld ops=%" PRIu64
          " extents=%" PRIu64 " bytes=%" PRIu64 " secs=%.6f cpu=%.6f\n",
          repeats, requests, s.extents, (uint64_t) size * (uint64_t) repeats,
          t1 - t0, c1 - c0);

  if (nbd_shutdown (nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (nbd);
  return EXIT_SUCCESS;
}
