/* map: print the allocation map of a whole export using block status
 * queries in the "base:allocation" metadata context.
 *
 * The program walks the export from offset 0, asking for block status of
 * the rest of the export each time and moving on by however much the
 * server described.  Adjacent extents with equal flags are merged, and
 * each resulting extent is printed as
 *
 *   OFFSET LENGTH FLAGS DESCRIPTION
 *
 * where DESCRIPTION is "data", "hole", "zero" or "hole,zero".  A final
 * line gives the totals.
 *
 *   map nbd+unix:///?socket=/tmp/sock
 *   map /tmp/sock
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

/* Servers need not accept 4 GiB or more in one query. */
#define QUERY_MAX (1ull << 30)

struct walker {
  uint64_t size;
  uint64_t pos;                 /* end of what has been described so far */
  int got_context;
  /* The extent being merged, not yet printed. */
  uint64_t cur_off, cur_len;
  uint32_t cur_flags;
  uint64_t nr_extents;
  uint64_t data_bytes;
  int bad;
};

static void
die (const char *what)
{
  fprintf (stderr, "map: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}

static int
connect_target (struct nbd_handle *nbd, const char *target)
{
  if (strstr (target, "://") != NULL)
    return nbd_connect_uri (nbd, target);
  return nbd_connect_unix (nbd, target);
}

static const char *
describe (uint32_t flags)
{
  switch (flags & (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO)) {
  case 0: return "data";
  case LIBNBD_STATE_HOLE: return "hole";
  case LIBNBD_STATE_ZERO: return "zero";
  default: return "hole,zero";
  }
}

static void
flush_extent (struct walker *w)
{
  if (w->cur_len == 0)
    return;
  printf ("%14" PRIu64 " %14" PRIu64 " %3" PRIu32 "  %s\n",
          w->cur_off, w->cur_len, w->cur_flags, describe (w->cur_flags));
  w->nr_extents++;
  if ((w->cur_flags & LIBNBD_STATE_HOLE) == 0)
    w->data_bytes += w->cur_len;
  w->cur_len = 0;
}

static void
add_extent (struct walker *w, uint64_t len, uint32_t flags)
{
  if (w->cur_len > 0 && flags == w->cur_flags &&
      w->cur_off + w->cur_len == w->pos) {
    w->cur_len += len;
  }
  else {
    flush_extent (w);
    w->cur_off = w->pos;
    w->cur_len = len;
    w->cur_flags = flags;
  }
  w->pos += len;
}

static int
on_extents (void *user_data, const char *metacontext, uint64_t offset,
            uint32_t *entries, size_t nr_entries, int *error)
{
  struct walker *w = user_data;
  size_t i;

  (void) error;
  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;                   /* some other context: not ours */
  w->got_context = 1;
  if (offset != w->pos) {
    fprintf (stderr, "map: extents start at %" PRIu64 ", expected %" PRIu64
             "\n", offset, w->pos);
    w->bad = 1;
    return 0;
  }
  if (nr_entries % 2 != 0) {
    fprintf (stderr, "map: odd number of entries (%zu)\n", nr_entries);
    w->bad = 1;
    return 0;
  }
  for (i = 0; i < nr_entries; i += 2) {
    uint64_t len = entries[i];

    if (len == 0) {
      fprintf (stderr, "map: zero-length extent at %" PRIu64 "\n", w->pos);
      w->bad = 1;
      return 0;
    }
    /* The last extent may reach past the end of the export: clip it. */
    if (len > w->size - w->pos)
      len = w->size - w->pos;
    if (len > 0)
      add_extent (w, len, entries[i + 1]);
    if (w->pos == w->size)
      break;
  }
  return 0;
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *nbd;
  struct walker w;
  int64_t size;
  int r;

  if (argc != 2) {
    fprintf (stderr, "usage: %s NBD-URI|UNIX-SOCKET\n", argv[0]);
    return EXIT_FAILURE;
  }

  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");
  if (nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1)
    die ("nbd_add_meta_context");
  if (connect_target (nbd, argv[1]) == -1)
    die ("connect");

  r = nbd_can_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION);
  if (r == -1)
    die ("nbd_can_meta_context");
  if (r == 0) {
    fprintf (stderr, "map: the server does not support %s\n",
             LIBNBD_CONTEXT_BASE_ALLOCATION);
    nbd_close (nbd);
    return EXIT_FAILURE;
  }

  size = nbd_get_size (nbd);
  if (size == -1)
    die ("nbd_get_size");

  memset (&w, 0, sizeof w);
  w.size = (uint64_t) size;
  while (w.pos < w.size) {
    uint64_t before = w.pos;
    uint64_t count = w.size - w.pos < QUERY_MAX ? w.size - w.pos : QUERY_MAX;

    w.got_context = 0;
    if (nbd_block_status (nbd, count, w.pos,
                          (nbd_extent_callback) {
                            .callback = on_extents, .user_data = &w },
                          0) == -1)
      die ("nbd_block_status");
    if (w.bad)
      exit (EXIT_FAILURE);
    if (!w.got_context) {
      fprintf (stderr, "map: no %s extents at %" PRIu64 "\n",
               LIBNBD_CONTEXT_BASE_ALLOCATION, before);
      exit (EXIT_FAILURE);
    }
    if (w.pos == before) {
      fprintf (stderr, "map: the server made no progress at %" PRIu64 "\n",
               before);
      exit (EXIT_FAILURE);
    }
  }
  flush_extent (&w);

  printf ("total: %" PRIu64 " bytes, %" PRIu64 " extents, %" PRIu64
          " bytes allocated\n", w.size, w.nr_extents, w.data_bytes);

  if (nbd_shutdown (nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (nbd);
  return EXIT_SUCCESS;
}
