/* dirty-map: print which parts of an export a QEMU dirty bitmap marks as
 * changed, next to its allocation map, negotiating everything by hand in
 * option mode with the libnbd 1.16 - 1.24 API.
 *
 *   dirty-map NBD-URI|UNIX-SOCKET BITMAP
 *
 *   qemu-img bitmap --add disk.qcow2 b0
 *   ... writes ...
 *   qemu-nbd -B b0 -f qcow2 -k /tmp/sock disk.qcow2 &
 *   dirty-map /tmp/sock b0
 *
 * The steps, each reported:
 *   - connect in option mode, with nothing negotiated automatically;
 *   - NBD_OPT_EXTENDED_HEADERS (64-bit requests and extents), falling back
 *     to structured replies when the server refuses them;
 *   - NBD_OPT_SET_META_CONTEXT for "base:allocation" and
 *     "qemu:dirty-bitmap:BITMAP" (a server without the bitmap replies with
 *     base:allocation alone, and the program goes on with that);
 *   - NBD_OPT_GO;
 *   - the whole export walked with nbd_block_status_64, both contexts at
 *     once, and each context's extents printed merged, as
 *       OFFSET LENGTH FLAGS DESCRIPTION
 *     under a "[CONTEXT]" line, then its totals;
 *   - if the server accepts block status payloads, the export walked
 *     again with nbd_block_status_filter asking for the bitmap alone,
 *     which must give the same extents and no others;
 *   - the traffic counters and the library's name and version.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

/* 64-bit block status and filtered queries came with libnbd 1.20. */
#ifndef LIBNBD_HAVE_NBD_BLOCK_STATUS_FILTER
#error "dirty-map needs libnbd 1.20 or later (nbd_block_status_filter)"
#endif

/* Queries are limited to this much when requests are 32-bit. */
#define QUERY_MAX_32 (1ull << 30)

/* An extent, merged with its neighbours of equal flags. */
struct extent {
  uint64_t off, len, flags;
};

/* The walk of one metadata context. */
struct context {
  const char *name;
  bool offered;                 /* the server agreed to it */
  bool dirty_bitmap;            /* describe flags as dirty/clean */
  bool seen;                    /* extents came in the current query */
  uint64_t pos;                 /* end of what has been described */
  struct extent *ext;
  size_t n, cap;
  uint64_t flagged;             /* bytes dirty, or bytes holding data */
};

struct walk {
  uint64_t size;
  uint64_t query_off;           /* offset of the current query */
  struct context *ctx;
  size_t nr_ctx;
  bool bad;
};

static struct nbd_handle *nbd;

static void
die (const char *what)
{
  fprintf (stderr, "dirty-map: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}

static void
fail (const char *msg)
{
  fprintf (stderr, "dirty-map: %s\n", msg);
  exit (EXIT_FAILURE);
}

static int
connect_target (const char *target)
{
  if (strstr (target, "://") != NULL)
    return nbd_connect_uri (nbd, target);
  return nbd_connect_unix (nbd, target);
}

static const char *
describe (const struct context *c, uint64_t flags)
{
  if (c->dirty_bitmap)
    return flags & LIBNBD_STATE_DIRTY ? "dirty" : "clean";
  switch (flags & (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO)) {
  case 0: return "data";
  case LIBNBD_STATE_HOLE: return "hole";
  case LIBNBD_STATE_ZERO: return "zero";
  default: return "hole,zero";
  }
}

/* Appends [c->pos, c->pos + len) with flags, merging with the last one. */
static void
add_extent (struct context *c, uint64_t len, uint64_t flags)
{
  struct extent *last = c->n > 0 ? &c->ext[c->n - 1] : NULL;

  if (last != NULL && last->flags == flags && last->off + last->len == c->pos)
    last->len += len;
  else {
    if (c->n == c->cap) {
      size_t cap = c->cap ? 2 * c->cap : 16;
      struct extent *e = realloc (c->ext, cap * sizeof *e);

      if (e == NULL) {
        perror ("realloc");
        exit (EXIT_FAILURE);
      }
      c->ext = e;
      c->cap = cap;
    }
    c->ext[c->n++] = (struct extent) { .off = c->pos, .len = len,
                                       .flags = flags };
  }
  c->pos += len;
}

static int
on_extents (void *user_data, const char *metacontext, uint64_t offset,
            nbd_extent *entries, size_t nr_entries, int *error)
{
  struct walk *w = user_data;
  struct context *c = NULL;
  uint64_t cursor = offset;
  size_t i;

  (void) error;
  for (i = 0; i < w->nr_ctx; i++)
    if (w->ctx[i].offered && strcmp (w->ctx[i].name, metacontext) == 0)
      c = &w->ctx[i];
  if (c == NULL) {
    fprintf (stderr, "dirty-map: extents of unexpected context %s\n",
             metacontext);
    w->bad = true;
    return 0;
  }
  c->seen = true;
  if (offset != w->query_off) {
    fprintf (stderr, "dirty-map: %s extents start at %" PRIu64
             ", the query at %" PRIu64 "\n", metacontext, offset,
             w->query_off);
    w->bad = true;
    return 0;
  }
  for (i = 0; i < nr_entries && cursor < w->size; i++) {
    uint64_t len = entries[i].length, end;

    if (len == 0) {
      fprintf (stderr, "dirty-map: %s: empty extent at %" PRIu64 "\n",
               metacontext, cursor);
      w->bad = true;
      return 0;
    }
    /* The last extent may reach past the end of the export. */
    end = len > w->size - cursor ? w->size : cursor + len;
    /* Skip what an earlier query already described for this context. */
    if (end > c->pos)
      add_extent (c, end - c->pos, entries[i].flags);
    cursor = end;
  }
  return 0;
}

/* Walks the whole export; filter lists the contexts to ask for, or is
 * NULL for all of them (nbd_block_status_64). */
static void
walk (struct walk *w, char **filter, bool extended)
{
  size_t i;

  for (;;) {
    uint64_t off = w->size, count;
    int r;

    for (i = 0; i < w->nr_ctx; i++)
      if (w->ctx[i].offered && w->ctx[i].pos < off)
        off = w->ctx[i].pos;
    if (off == w->size)
      break;
    count = w->size - off;
    if (!extended && count > QUERY_MAX_32)
      count = QUERY_MAX_32;
    w->query_off = off;
    for (i = 0; i < w->nr_ctx; i++)
      w->ctx[i].seen = false;
    if (filter == NULL)
      r = nbd_block_status_64 (nbd, count, off,
                               (nbd_extent64_callback) {
                                 .callback = on_extents, .user_data = w },
                               0);
    else
      r = nbd_block_status_filter (nbd, count, off, filter,
                                   (nbd_extent64_callback) {
                                     .callback = on_extents, .user_data = w },
                                   0);
    if (r == -1)
      die (filter == NULL ? "nbd_block_status_64" : "nbd_block_status_filter");
    if (w->bad)
      exit (EXIT_FAILURE);
    for (i = 0; i < w->nr_ctx; i++) {
      if (w->ctx[i].offered && w->ctx[i].pos < w->size && !w->ctx[i].seen) {
        fprintf (stderr, "dirty-map: no %s extents at %" PRIu64 "\n",
                 w->ctx[i].name, off);
        exit (EXIT_FAILURE);
      }
    }
  }
}

static void
print_context (const struct context *c)
{
  size_t i;

  printf ("[%s]\n", c->name);
  for (i = 0; i < c->n; i++) {
    const struct extent *e = &c->ext[i];

    printf ("%14" PRIu64 " %14" PRIu64 " %3" PRIu64 "  %s\n",
            e->off, e->len, e->flags, describe (c, e->flags));
  }
  printf ("total %s: %zu extents, %" PRIu64 " bytes %s\n", c->name, c->n,
          c->flagged, c->dirty_bitmap ? "dirty" : "allocated");
}

static void
count_flagged (struct context *c)
{
  size_t i;

  c->flagged = 0;
  for (i = 0; i < c->n; i++) {
    bool counted = c->dirty_bitmap
      ? (c->ext[i].flags & LIBNBD_STATE_DIRTY) != 0
      : (c->ext[i].flags & LIBNBD_STATE_HOLE) == 0;

    if (counted)
      c->flagged += c->ext[i].len;
  }
}

static int
on_context (void *user_data, const char *name)
{
  struct walk *w = user_data;
  size_t i;

  printf ("  server agreed to %s\n", name);
  for (i = 0; i < w->nr_ctx; i++)
    if (strcmp (w->ctx[i].name, name) == 0)
      w->ctx[i].offered = true;
  return 0;
}

int
main (int argc, char *argv[])
{
  struct context ctx[2];
  struct walk w;
  char *dirty_name;
  char *queries[3];
  int extended, structured, count, payload, r;
  int64_t size;
  uint64_t sent, received;
  const char *package, *version;
  size_t i;

  if (argc != 3) {
    fprintf (stderr, "usage: %s NBD-URI|UNIX-SOCKET BITMAP\n", argv[0]);
    return EXIT_FAILURE;
  }
  dirty_name = malloc (strlen (LIBNBD_CONTEXT_QEMU_DIRTY_BITMAP) +
                       strlen (argv[2]) + 1);
  if (dirty_name == NULL) {
    perror ("malloc");
    return EXIT_FAILURE;
  }
  strcpy (dirty_name, LIBNBD_CONTEXT_QEMU_DIRTY_BITMAP);
  strcat (dirty_name, argv[2]);

  memset (ctx, 0, sizeof ctx);
  ctx[0].name = LIBNBD_CONTEXT_BASE_ALLOCATION;
  ctx[1].name = dirty_name;
  ctx[1].dirty_bitmap = true;
  memset (&w, 0, sizeof w);
  w.ctx = ctx;
  w.nr_ctx = 2;

  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");
  /* Stop after the greeting; negotiate every option here. */
  if (nbd_set_opt_mode (nbd, true) == -1)
    die ("nbd_set_opt_mode");
  if (nbd_set_request_structured_replies (nbd, false) == -1)
    die ("nbd_set_request_structured_replies");
  if (nbd_set_request_meta_context (nbd, false) == -1)
    die ("nbd_set_request_meta_context");
  if (connect_target (argv[1]) == -1)
    die ("connect");
  if (!nbd_aio_is_negotiating (nbd))
    fail ("the connection is not in option mode");
  printf ("connected in option mode (%s)\n", nbd_get_protocol (nbd));

  extended = nbd_opt_extended_headers (nbd);
  if (extended == -1)
    die ("nbd_opt_extended_headers");
  printf ("extended headers: %s\n", extended ? "agreed" : "refused");
  if (!extended) {
    structured = nbd_opt_structured_reply (nbd);
    if (structured == -1)
      die ("nbd_opt_structured_reply");
    printf ("structured replies: %s\n", structured ? "agreed" : "refused");
    if (!structured)
      fail ("the server has neither extended headers nor structured "
            "replies: no block status");
  }

  queries[0] = (char *) LIBNBD_CONTEXT_BASE_ALLOCATION;
  queries[1] = dirty_name;
  queries[2] = NULL;
  count = nbd_opt_set_meta_context_queries (nbd, queries,
                                            (nbd_context_callback) {
                                              .callback = on_context,
                                              .user_data = &w });
  if (count == -1)
    die ("nbd_opt_set_meta_context_queries");
  printf ("meta contexts: %d of 2 agreed\n", count);
  if (count == 0)
    fail ("the server agreed to none of the contexts");

  if (nbd_opt_go (nbd) == -1)
    die ("nbd_opt_go");
  r = nbd_get_extended_headers_negotiated (nbd);
  if (r == -1)
    die ("nbd_get_extended_headers_negotiated");
  if (r != extended)
    fail ("nbd_get_extended_headers_negotiated disagrees with the option");
  payload = nbd_can_block_status_payload (nbd);
  if (payload == -1)
    die ("nbd_can_block_status_payload");
  printf ("block status payload: %s\n", payload ? "yes" : "no");
  for (i = 0; i < 2; i++) {
    r = nbd_can_meta_context (nbd, ctx[i].name);
    if (r == -1)
      die ("nbd_can_meta_context");
    if (r != ctx[i].offered)
      fail ("nbd_can_meta_context disagrees with the server's replies");
    if (!r)
      printf ("%s: not offered by the server\n", ctx[i].name);
  }
  size = nbd_get_size (nbd);
  if (size == -1)
    die ("nbd_get_size");
  printf ("export size: %" PRId64 "\n", size);
  w.size = (uint64_t) size;

  /* Both contexts at once. */
  walk (&w, NULL, extended);
  for (i = 0; i < 2; i++) {
    if (ctx[i].offered) {
      count_flagged (&ctx[i]);
      print_context (&ctx[i]);
    }
  }

  /* The bitmap alone, if the server accepts a filter. */
  if (!payload)
    printf ("filtered walk: skipped, the server does not accept "
            "block status payloads\n");
  else if (!ctx[1].offered)
    printf ("filtered walk: skipped, no dirty bitmap\n");
  else {
    struct context all = ctx[1];
    char *filter[2] = { dirty_name, NULL };

    ctx[0].offered = false;     /* extents of it would now be an error */
    ctx[1].pos = 0;
    ctx[1].ext = NULL;
    ctx[1].n = ctx[1].cap = 0;
    walk (&w, filter, extended);
    if (ctx[1].n != all.n ||
        memcmp (ctx[1].ext, all.ext, all.n * sizeof *all.ext) != 0)
      fail ("the filtered walk gave other extents");
    printf ("filtered walk of %s: the same %zu extents\n", dirty_name,
            ctx[1].n);
    free (all.ext);
    ctx[0].offered = true;
  }

  sent = nbd_stats_bytes_sent (nbd);
  received = nbd_stats_bytes_received (nbd);
  if (sent == 0 || received == 0)
    fail ("the traffic counters did not count");
  printf ("traffic: %" PRIu64 " bytes sent, %" PRIu64 " bytes received\n",
          sent, received);

  package = nbd_get_package_name (nbd);
  version = nbd_get_version (nbd);
  if (package == NULL || version == NULL)
    die ("nbd_get_package_name");
  if (strcmp (package, "libnbd") != 0)
    fail ("not running on libnbd");
  printf ("library: %s %s\n", package, version);

  if (nbd_shutdown (nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (nbd);
  for (i = 0; i < 2; i++)
    free (ctx[i].ext);
  free (dirty_name);
  printf ("dirty-map: OK\n");
  return EXIT_SUCCESS;
}
