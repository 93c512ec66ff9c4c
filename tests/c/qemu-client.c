/* qemu-client: drives exports of qemu-storage-daemon and qemu-nbd through
 * the libnbd 1.14 API and prints what it saw.  The output must not depend
 * on which libnbd ran it: the tests (tests/tests/qsd.rs, qemu_nbd.rs) build
 * this file against Debian's libnbd and against the library under test and
 * compare the two outputs line by line.  Nothing library-specific (package
 * name, version, error message wording) is printed; failures print the
 * errno only, and end the program with exit status 1.
 *
 *   qemu-client info URI [CONTEXT...]
 *       Connects asking for the given metadata contexts (and the full
 *       info, for the description), prints the negotiated facts, every
 *       flag, the block size constraints, a hash of the first 64 KiB, and
 *       the block status of the whole export in each context that was
 *       negotiated (adjacent equal extents merged).
 *
 *   qemu-client list URI
 *       Option mode: nbd_opt_list, then nbd_opt_info and
 *       nbd_opt_list_meta_context for every listed export, then nbd_opt_go
 *       on the first one and a read.
 *
 *   qemu-client multiconn URI N
 *       N handles on the same export; each writes its own block and
 *       flushes, then every handle reads every block back; then each
 *       handle overwrites its neighbour's block and flushes, and the
 *       neighbour reads it at once.
 *
 *   qemu-client maxconn URI N
 *       Opens N connections, then starts an (N+1)th with nbd_aio_connect_uri
 *       and polls it for a while: it must not complete while the N are
 *       open (the server allows N).  Then one of the N is shut down, and
 *       the extra one must complete its handshake and read.
 *
 *   qemu-client persist URI ROUNDS
 *       ROUNDS connections one after the other: each reads what the
 *       previous one wrote, writes its own block, flushes, disconnects.
 *
 *   qemu-client activate EXPORT PROGRAM [ARG...]
 *       nbd_connect_systemd_socket_activation of PROGRAM ARGS, export
 *       EXPORT; prints the facts, and on a writable export writes, flushes
 *       and reads back.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#define BLOCK (64u * 1024)
#define MAX_CONTEXTS 8
#define MAX_HANDLES 16
#define QUERY_MAX (1ull << 30)

static const char *
errno_name (int e)
{
  static char number[32];

  switch (e) {
  case 0: return "0";
  case EPERM: return "EPERM";
  case ENOENT: return "ENOENT";
  case EIO: return "EIO";
  case EINVAL: return "EINVAL";
  case ENOSPC: return "ENOSPC";
  case ENOTSUP: return "ENOTSUP";
  case ECONNREFUSED: return "ECONNREFUSED";
  case ECONNRESET: return "ECONNRESET";
  case EACCES: return "EACCES";
  case ESHUTDOWN: return "ESHUTDOWN";
  case EPIPE: return "EPIPE";
  default:
    snprintf (number, sizeof number, "%d", e);
    return number;
  }
}

/* Prints the failed call and errno, and exits. */
static void
fail (const char *what)
{
  int e = nbd_get_errno ();
  printf ("FAILED %s errno=%s\n", what, errno_name (e));
  fprintf (stderr, "qemu-client: %s: %s\n", what, nbd_get_error ());
  exit (1);
}

static struct nbd_handle *
new_handle (void)
{
  struct nbd_handle *h = nbd_create ();
  if (h == NULL)
    fail ("nbd_create");
  if (nbd_set_uri_allow_local_file (h, true) == -1)
    fail ("nbd_set_uri_allow_local_file");
  return h;
}

/* FNV-1a over a buffer: a short, deterministic digest to print. */
static uint64_t
hash (const unsigned char *p, size_t n)
{
  uint64_t h = 0xcbf29ce484222325ull;
  size_t i;
  for (i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

static void
print_flag (struct nbd_handle *h, const char *name,
            int (*f) (struct nbd_handle *))
{
  int r = f (h);
  if (r == -1)
    printf ("%s: error errno=%s\n", name, errno_name (nbd_get_errno ()));
  else
    printf ("%s: %d\n", name, r);
}

static void
print_flags (struct nbd_handle *h)
{
  print_flag (h, "is_read_only", nbd_is_read_only);
  print_flag (h, "is_rotational", nbd_is_rotational);
  print_flag (h, "can_flush", nbd_can_flush);
  print_flag (h, "can_fua", nbd_can_fua);
  print_flag (h, "can_trim", nbd_can_trim);
  print_flag (h, "can_zero", nbd_can_zero);
  print_flag (h, "can_fast_zero", nbd_can_fast_zero);
  print_flag (h, "can_df", nbd_can_df);
  print_flag (h, "can_multi_conn", nbd_can_multi_conn);
  print_flag (h, "can_cache", nbd_can_cache);
}

static void
print_description (struct nbd_handle *h)
{
  char *d = nbd_get_export_description (h);
  if (d == NULL)
    printf ("description: (none)\n");
  else
    printf ("description: \"%s\"\n", d);
  free (d);
}

/* ---- block status walk over several contexts ---- */

struct extent { uint64_t off, len; uint32_t flags; };

struct ctx_map {
  const char *name;
  struct extent *v;
  size_t n, cap;
  uint64_t end;                 /* how far this context is described */
  int seen;                     /* got extents in the current query */
};

struct walk {
  struct ctx_map ctx[MAX_CONTEXTS];
  size_t nctx;
  uint64_t size;
  int bad;
};

static void
map_add (struct ctx_map *m, uint64_t off, uint64_t len, uint32_t flags)
{
  if (m->n > 0) {
    struct extent *last = &m->v[m->n - 1];
    if (last->flags == flags && last->off + last->len == off) {
      last->len += len;
      m->end = off + len;
      return;
    }
  }
  if (m->n == m->cap) {
    m->cap = m->cap ? 2 * m->cap : 16;
    m->v = realloc (m->v, m->cap * sizeof *m->v);
    if (m->v == NULL) {
      perror ("realloc");
      exit (1);
    }
  }
  m->v[m->n].off = off;
  m->v[m->n].len = len;
  m->v[m->n].flags = flags;
  m->n++;
  m->end = off + len;
}

static int
on_extents (void *user_data, const char *metacontext, uint64_t offset,
            uint32_t *entries, size_t nr_entries, int *error)
{
  struct walk *w = user_data;
  struct ctx_map *m = NULL;
  uint64_t pos = offset;
  size_t i;

  (void) error;
  for (i = 0; i < w->nctx; i++)
    if (strcmp (w->ctx[i].name, metacontext) == 0)
      m = &w->ctx[i];
  if (m == NULL) {
    printf ("unexpected context %s\n", metacontext);
    w->bad = 1;
    return 0;
  }
  m->seen = 1;
  for (i = 0; i + 1 < nr_entries; i += 2) {
    uint64_t len = entries[i];
    uint64_t start = pos, stop = pos + len;
    pos = stop;
    if (len == 0) {
      w->bad = 1;
      return 0;
    }
    if (stop > w->size)
      stop = w->size;
    if (start < m->end)         /* already described by an earlier reply */
      start = m->end;
    if (stop > start)
      map_add (m, start, stop - start, entries[i + 1]);
  }
  return 0;
}

static void
walk_all (struct nbd_handle *h, struct walk *w)
{
  uint64_t pos = 0;

  while (pos < w->size && w->nctx > 0) {
    uint64_t count = w->size - pos < QUERY_MAX ? w->size - pos : QUERY_MAX;
    uint64_t next = UINT64_MAX;
    size_t i;

    for (i = 0; i < w->nctx; i++)
      w->ctx[i].seen = 0;
    if (nbd_block_status (h, count, pos,
                          (nbd_extent_callback) {
                            .callback = on_extents, .user_data = w }, 0) == -1)
      fail ("nbd_block_status");
    if (w->bad) {
      printf ("bad block status reply at %" PRIu64 "\n", pos);
      exit (1);
    }
    for (i = 0; i < w->nctx; i++) {
      if (!w->ctx[i].seen) {
        printf ("no extents for %s at %" PRIu64 "\n", w->ctx[i].name, pos);
        exit (1);
      }
      if (w->ctx[i].end < next)
        next = w->ctx[i].end;
    }
    if (next <= pos) {
      printf ("no progress at %" PRIu64 "\n", pos);
      exit (1);
    }
    pos = next;
  }
  /* Contexts described beyond the last query point are complete too. */
}

static int
cmd_info (int argc, char **argv)
{
  struct nbd_handle *h = new_handle ();
  struct walk w;
  unsigned char *buf;
  char *name;
  int64_t size;
  int i;

  memset (&w, 0, sizeof w);
  if (nbd_set_full_info (h, true) == -1)
    fail ("nbd_set_full_info");
  for (i = 1; i < argc; i++)
    if (nbd_add_meta_context (h, argv[i]) == -1)
      fail ("nbd_add_meta_context");
  if (nbd_connect_uri (h, argv[0]) == -1)
    fail ("nbd_connect_uri");

  printf ("protocol: %s\n", nbd_get_protocol (h));
  printf ("tls: %d\n", nbd_get_tls_negotiated (h));
  printf ("structured_replies: %d\n",
          nbd_get_structured_replies_negotiated (h));
  name = nbd_get_canonical_export_name (h);
  printf ("export: \"%s\"\n", name ? name : "(error)");
  free (name);
  print_description (h);
  size = nbd_get_size (h);
  if (size == -1)
    fail ("nbd_get_size");
  printf ("size: %" PRIi64 "\n", size);
  print_flags (h);
  printf ("block_size: min %" PRIi64 " preferred %" PRIi64 " max %" PRIi64
          "\n",
          nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM),
          nbd_get_block_size (h, LIBNBD_SIZE_PREFERRED),
          nbd_get_block_size (h, LIBNBD_SIZE_MAXIMUM));

  buf = malloc (BLOCK);
  if (buf == NULL)
    return 1;
  if (size >= BLOCK) {
    if (nbd_pread (h, buf, BLOCK, 0, 0) == -1)
      fail ("nbd_pread");
    printf ("first 64 KiB: %016" PRIx64 "\n", hash (buf, BLOCK));
  }
  free (buf);

  w.size = (uint64_t) size;
  for (i = 1; i < argc; i++) {
    int r = nbd_can_meta_context (h, argv[i]);
    printf ("context %s: %d\n", argv[i], r);
    if (r == 1 && w.nctx < MAX_CONTEXTS)
      w.ctx[w.nctx++].name = argv[i];
  }
  walk_all (h, &w);
  for (size_t c = 0; c < w.nctx; c++) {
    printf ("map %s:\n", w.ctx[c].name);
    for (size_t e = 0; e < w.ctx[c].n; e++)
      printf ("  %" PRIu64 " %" PRIu64 " %" PRIu32 "\n", w.ctx[c].v[e].off,
              w.ctx[c].v[e].len, w.ctx[c].v[e].flags);
    free (w.ctx[c].v);
  }

  if (nbd_shutdown (h, 0) == -1)
    fail ("nbd_shutdown");
  nbd_close (h);
  printf ("info: OK\n");
  return 0;
}

/* ---- option mode listing ---- */

struct listing {
  char *names[64];
  size_t n;
};

static int
on_export (void *user_data, const char *name, const char *description)
{
  struct listing *l = user_data;
  printf ("export \"%s\" description \"%s\"\n", name, description);
  if (l->n < 64)
    l->names[l->n++] = strdup (name);
  return 0;
}

static int
on_context (void *user_data, const char *name)
{
  (void) user_data;
  printf ("  context %s\n", name);
  return 0;
}

static int
cmd_list (int argc, char **argv)
{
  struct nbd_handle *h = new_handle ();
  struct listing l;
  unsigned char buf[4096];
  size_t i;
  int r;

  (void) argc;
  memset (&l, 0, sizeof l);
  if (nbd_set_opt_mode (h, true) == -1 || nbd_set_full_info (h, true) == -1)
    fail ("nbd_set_opt_mode");
  if (nbd_connect_uri (h, argv[0]) == -1)
    fail ("nbd_connect_uri");
  if (!nbd_aio_is_negotiating (h)) {
    printf ("not negotiating after connect\n");
    return 1;
  }
  r = nbd_opt_list (h, (nbd_list_callback) {
                      .callback = on_export, .user_data = &l });
  if (r == -1)
    fail ("nbd_opt_list");
  printf ("listed: %d\n", r);
  for (i = 0; i < l.n; i++) {
    if (nbd_set_export_name (h, l.names[i]) == -1)
      fail ("nbd_set_export_name");
    if (nbd_opt_info (h) == -1) {
      printf ("info \"%s\": FAILED errno=%s\n", l.names[i],
              errno_name (nbd_get_errno ()));
      continue;
    }
    printf ("info \"%s\": size %" PRIi64 " read_only %d multi_conn %d\n",
            l.names[i], nbd_get_size (h), nbd_is_read_only (h),
            nbd_can_multi_conn (h));
    print_description (h);
    r = nbd_opt_list_meta_context (h, (nbd_context_callback) {
                                     .callback = on_context });
    if (r == -1)
      fail ("nbd_opt_list_meta_context");
    printf ("  %d contexts\n", r);
  }
  if (l.n == 0) {
    printf ("nothing listed\n");
    return 1;
  }
  if (nbd_set_export_name (h, l.names[0]) == -1)
    fail ("nbd_set_export_name");
  if (nbd_opt_go (h) == -1)
    fail ("nbd_opt_go");
  if (nbd_pread (h, buf, sizeof buf, 0, 0) == -1)
    fail ("nbd_pread");
  printf ("go \"%s\": size %" PRIi64 ", first 4 KiB %016" PRIx64 "\n",
          l.names[0], nbd_get_size (h), hash (buf, sizeof buf));
  for (i = 0; i < l.n; i++)
    free (l.names[i]);
  if (nbd_shutdown (h, 0) == -1)
    fail ("nbd_shutdown");
  nbd_close (h);
  printf ("list: OK\n");
  return 0;
}

/* ---- several connections ---- */

static struct nbd_handle *
connected (const char *uri)
{
  struct nbd_handle *h = new_handle ();
  if (nbd_connect_uri (h, uri) == -1)
    fail ("nbd_connect_uri");
  return h;
}

static void
write_block (struct nbd_handle *h, uint64_t index, unsigned char byte)
{
  static unsigned char buf[BLOCK];
  memset (buf, byte, sizeof buf);
  if (nbd_pwrite (h, buf, sizeof buf, index * BLOCK, 0) == -1)
    fail ("nbd_pwrite");
}

static int
block_is (struct nbd_handle *h, uint64_t index, unsigned char byte)
{
  static unsigned char buf[BLOCK];
  size_t i;
  if (nbd_pread (h, buf, sizeof buf, index * BLOCK, 0) == -1)
    fail ("nbd_pread");
  for (i = 0; i < sizeof buf; i++)
    if (buf[i] != byte)
      return 0;
  return 1;
}

static int
count_arg (const char *s)
{
  int n = atoi (s);
  if (n < 1 || n > MAX_HANDLES) {
    fprintf (stderr, "qemu-client: N must be 1..%d\n", MAX_HANDLES);
    exit (2);
  }
  return n;
}

static int
cmd_multiconn (int argc, char **argv)
{
  struct nbd_handle *h[MAX_HANDLES];
  int n, i, j;

  if (argc != 2)
    return 2;
  n = count_arg (argv[1]);
  for (i = 0; i < n; i++) {
    h[i] = connected (argv[0]);
    printf ("handle %d: can_multi_conn %d\n", i, nbd_can_multi_conn (h[i]));
  }
  for (i = 0; i < n; i++) {
    write_block (h[i], i, 0x10 + i);
    if (nbd_flush (h[i], 0) == -1)
      fail ("nbd_flush");
  }
  for (j = 0; j < n; j++)
    for (i = 0; i < n; i++)
      if (!block_is (h[j], i, 0x10 + i)) {
        printf ("round 1: handle %d does not see block %d\n", j, i);
        return 1;
      }
  printf ("round 1: every handle sees the %d flushed writes\n", n);
  for (i = 0; i < n; i++) {
    int next = (i + 1) % n;
    write_block (h[i], next, 0x80 + i);
    if (nbd_flush (h[i], 0) == -1)
      fail ("nbd_flush");
    if (!block_is (h[next], next, 0x80 + i)) {
      printf ("round 2: handle %d does not see handle %d's write\n", next, i);
      return 1;
    }
  }
  printf ("round 2: each neighbour saw the write at once\n");
  for (i = 0; i < n; i++) {
    if (nbd_shutdown (h[i], 0) == -1)
      fail ("nbd_shutdown");
    nbd_close (h[i]);
  }
  printf ("multiconn: OK\n");
  return 0;
}

static int
cmd_maxconn (int argc, char **argv)
{
  struct nbd_handle *h[MAX_HANDLES];
  struct nbd_handle *extra;
  unsigned char buf[512];
  int n, i, r;

  if (argc != 2)
    return 2;
  n = count_arg (argv[1]);
  for (i = 0; i < n; i++)
    h[i] = connected (argv[0]);
  printf ("%d connections open\n", n);

  extra = new_handle ();
  if (nbd_aio_connect_uri (extra, argv[0]) == -1)
    fail ("nbd_aio_connect_uri");
  /* While the N are open the server must not serve this one.  Polling
   * only bounds how long we watch: a slow machine can only make this
   * pass more easily, never fail. */
  for (i = 0; i < 10 && nbd_aio_is_connecting (extra); i++) {
    r = nbd_poll (extra, 100);
    if (r == -1)
      fail ("nbd_poll");
  }
  printf ("extra connection while %d open: %s\n", n,
          nbd_aio_is_connecting (extra) ? "waiting" :
          nbd_aio_is_ready (extra) ? "SERVED" : "FAILED");
  if (!nbd_aio_is_connecting (extra))
    return 1;

  if (nbd_shutdown (h[0], 0) == -1)
    fail ("nbd_shutdown");
  nbd_close (h[0]);
  while (nbd_aio_is_connecting (extra))
    if (nbd_poll (extra, -1) == -1)
      fail ("nbd_poll");
  if (!nbd_aio_is_ready (extra)) {
    printf ("extra connection after one closed: not ready\n");
    return 1;
  }
  if (nbd_pread (extra, buf, sizeof buf, 0, 0) == -1)
    fail ("nbd_pread");
  printf ("extra connection after one closed: connected and read\n");
  for (i = 1; i < n; i++) {
    if (nbd_shutdown (h[i], 0) == -1)
      fail ("nbd_shutdown");
    nbd_close (h[i]);
  }
  if (nbd_shutdown (extra, 0) == -1)
    fail ("nbd_shutdown");
  nbd_close (extra);
  printf ("maxconn: OK\n");
  return 0;
}

static int
cmd_persist (int argc, char **argv)
{
  int rounds, r;

  if (argc != 2)
    return 2;
  rounds = count_arg (argv[1]);
  for (r = 0; r < rounds; r++) {
    struct nbd_handle *h = connected (argv[0]);
    if (r > 0 && !block_is (h, r - 1, 0x40 + r - 1)) {
      printf ("round %d: the previous connection's write is missing\n", r);
      return 1;
    }
    write_block (h, r, 0x40 + r);
    if (nbd_flush (h, 0) == -1)
      fail ("nbd_flush");
    if (nbd_shutdown (h, 0) == -1)
      fail ("nbd_shutdown");
    nbd_close (h);
    printf ("round %d: connected%s, wrote block %d\n", r,
            r > 0 ? ", saw the previous write" : "", r);
  }
  printf ("persist: OK\n");
  return 0;
}

static int
cmd_activate (int argc, char **argv)
{
  struct nbd_handle *h = new_handle ();
  int ro;

  if (argc < 2)
    return 2;
  if (nbd_set_export_name (h, argv[0]) == -1 ||
      nbd_set_full_info (h, true) == -1 ||
      nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1)
    fail ("settings");
  if (nbd_connect_systemd_socket_activation (h, &argv[1]) == -1)
    fail ("nbd_connect_systemd_socket_activation");
  printf ("size: %" PRIi64 "\n", nbd_get_size (h));
  print_description (h);
  print_flags (h);
  printf ("context base:allocation: %d\n",
          nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  ro = nbd_is_read_only (h);
  if (ro == 0) {
    write_block (h, 1, 0x5a);
    if (nbd_flush (h, 0) == -1)
      fail ("nbd_flush");
    printf ("wrote and read back: %s\n", block_is (h, 1, 0x5a) ? "yes" : "NO");
  }
  else {
    unsigned char buf[BLOCK];
    memset (buf, 0x5a, sizeof buf);
    if (nbd_pwrite (h, buf, sizeof buf, 0, 0) == -1)
      printf ("write refused: errno=%s\n", errno_name (nbd_get_errno ()));
    else
      printf ("write on a read-only export succeeded\n");
  }
  if (nbd_shutdown (h, 0) == -1)
    fail ("nbd_shutdown");
  nbd_close (h);
  printf ("activate: OK\n");
  return 0;
}

int
main (int argc, char *argv[])
{
  if (argc < 3) {
    fprintf (stderr,
             "usage: %s info|list|multiconn|maxconn|persist URI [ARGS...]\n"
             "       %s activate EXPORT PROGRAM [ARGS...]\n",
             argv[0], argv[0]);
    return 2;
  }
  if (strcmp (argv[1], "info") == 0)
    return cmd_info (argc - 2, argv + 2);
  if (strcmp (argv[1], "list") == 0)
    return cmd_list (argc - 2, argv + 2);
  if (strcmp (argv[1], "multiconn") == 0)
    return cmd_multiconn (argc - 2, argv + 2);
  if (strcmp (argv[1], "maxconn") == 0)
    return cmd_maxconn (argc - 2, argv + 2);
  if (strcmp (argv[1], "persist") == 0)
    return cmd_persist (argc - 2, argv + 2);
  if (strcmp (argv[1], "activate") == 0)
    return cmd_activate (argc - 2, argv + 2);
  fprintf (stderr, "qemu-client: unknown command %s\n", argv[1]);
  return 2;
}
