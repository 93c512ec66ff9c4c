/* backup-pull: an incremental backup in "pull" mode, as a backup tool
 * does it against QEMU (libvirt's pull-mode backup): QEMU exports a
 * point-in-time view of the disk over NBD together with a dirty bitmap
 * that records which parts changed since the previous backup; the tool
 * asks for block status in two metadata contexts at once,
 * "qemu:dirty-bitmap:NAME" (flag 1: changed) and "base:allocation"
 * (whether the changed parts hold data or read as zeroes), and copies
 * only the changed data into the previous backup.
 *
 *   backup-pull NBD-URI|UNIX-SOCKET BITMAP TARGET
 *
 * TARGET is a raw file: the previous full backup, updated in place, or a
 * new file, which then ends up with only the changed ranges filled in.
 * It is set to the size of the export.  For each range of the export:
 *
 *   clean                        skipped: never read
 *   dirty, reads as zeroes       a hole is punched in TARGET (or zeroes
 *                                are written where that is unsupported)
 *   dirty, data                  read with nbd_pread, written to TARGET
 *
 * Every action is printed ("copy OFFSET LENGTH", "zero OFFSET LENGTH"),
 * then the totals, among them the bytes read from the server.
 *
 *   qemu-img bitmap --add disk.qcow2 b0      (at the previous backup)
 *   ... the guest writes ...
 *   qemu-img bitmap --disable disk.qcow2 b0  (freeze the point in time)
 *   qemu-nbd -r -B b0 -f qcow2 -k /tmp/sock disk.qcow2 &
 *   backup-pull /tmp/sock b0 backup.raw
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

/* The flag of a changed extent in a qemu:dirty-bitmap context. */
#define DIRTY 1
/* Block status queries and reads are done in pieces up to these sizes. */
#define QUERY_MAX (1ull << 30)
#define READ_MAX (4u << 20)

/* One context's extents of the current query, as (offset, length, flags). */
struct extents {
  uint64_t *off, *len;
  uint32_t *flags;
  size_t n, cap;
  uint64_t end;
};

struct backup {
  struct nbd_handle *nbd;
  int fd;
  const char *target;
  char *dirty_context;
  struct extents dirty, alloc;
  unsigned char *buf;
  /* What was done. */
  uint64_t dirty_bytes, dirty_extents;
  uint64_t copied_bytes, reads;
  uint64_t zeroed_bytes, clean_bytes;
  uint64_t dirty_end;           /* where the last dirty range ended */
  /* An action not yet carried out, so that neighbours are merged:
   * 0 none, 'c' copy, 'z' zero. */
  int pending;
  uint64_t pending_off, pending_len;
};

static void
die (const char *what)
{
  fprintf (stderr, "backup-pull: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}

static void
die_errno (const char *what, const char *target)
{
  fprintf (stderr, "backup-pull: %s %s: %s\n", what, target, strerror (errno));
  exit (EXIT_FAILURE);
}

static void
push (struct extents *e, uint64_t off, uint64_t len, uint32_t flags)
{
  if (e->n == e->cap) {
    e->cap = e->cap ? 2 * e->cap : 64;
    e->off = realloc (e->off, e->cap * sizeof *e->off);
    e->len = realloc (e->len, e->cap * sizeof *e->len);
    e->flags = realloc (e->flags, e->cap * sizeof *e->flags);
    if (e->off == NULL || e->len == NULL || e->flags == NULL) {
      perror ("backup-pull: realloc");
      exit (EXIT_FAILURE);
    }
  }
  e->off[e->n] = off;
  e->len[e->n] = len;
  e->flags[e->n] = flags;
  e->n++;
  e->end = off + len;
}

static int
on_extents (void *user_data, const char *metacontext, uint64_t offset,
            uint32_t *entries, size_t nr_entries, int *error)
{
  struct backup *b = user_data;
  struct extents *e;
  size_t i;

  (void) error;
  if (strcmp (metacontext, b->dirty_context) == 0)
    e = &b->dirty;
  else if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0)
    e = &b->alloc;
  else
    return 0;
  for (i = 0; i + 1 < nr_entries; i += 2) {
    if (entries[i] == 0)
      break;
    push (e, offset, entries[i], entries[i + 1]);
    offset += entries[i];
  }
  return 0;
}

/* Copies [off, off+len) of the export into the target. */
static void
copy_range (struct backup *b, uint64_t off, uint64_t len)
{
  while (len > 0) {
    size_t n = len < READ_MAX ? len : READ_MAX;
    if (nbd_pread (b->nbd, b->buf, n, off, 0) == -1)
      die ("nbd_pread");
    b->reads++;
    b->copied_bytes += n;
    if (pwrite (b->fd, b->buf, n, off) != (ssize_t) n)
      die_errno ("write", b->target);
    off += n;
    len -= n;
  }
}

/* Makes [off, off+len) of the target read as zeroes, as a hole. */
static void
zero_range (struct backup *b, uint64_t off, uint64_t len)
{
  b->zeroed_bytes += len;
  if (fallocate (b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 off, len) == 0)
    return;
  if (errno != EOPNOTSUPP)
    die_errno ("punch a hole in", b->target);
  /* No holes in this file system: write the zeroes. */
  memset (b->buf, 0, READ_MAX);
  while (len > 0) {
    size_t n = len < READ_MAX ? len : READ_MAX;
    if (pwrite (b->fd, b->buf, n, off) != (ssize_t) n)
      die_errno ("write", b->target);
    off += n;
    len -= n;
  }
}

static void
flush_pending (struct backup *b)
{
  if (b->pending == 0)
    return;
  printf ("%s %" PRIu64 " %" PRIu64 "\n",
          b->pending == 'c' ? "copy" : "zero", b->pending_off, b->pending_len);
  if (b->pending == 'c')
    copy_range (b, b->pending_off, b->pending_len);
  else
    zero_range (b, b->pending_off, b->pending_len);
  b->pending = 0;
}

static void
act (struct backup *b, int what, uint64_t off, uint64_t len)
{
  if (b->pending == what && b->pending_off + b->pending_len == off) {
    b->pending_len += len;
    return;
  }
  flush_pending (b);
  b->pending = what;
  b->pending_off = off;
  b->pending_len = len;
}

/* Walks the two contexts' extents of one query side by side over
 * [pos, end) and acts on every piece. */
static void
process (struct backup *b, uint64_t pos, uint64_t end)
{
  size_t d = 0, a = 0;

  while (pos < end) {
    uint64_t stop;
    int dirty, zero;

    while (d < b->dirty.n && b->dirty.off[d] + b->dirty.len[d] <= pos)
      d++;
    while (a < b->alloc.n && b->alloc.off[a] + b->alloc.len[a] <= pos)
      a++;
    if (d == b->dirty.n || a == b->alloc.n) {
      fprintf (stderr, "backup-pull: extents do not cover %" PRIu64 "\n", pos);
      exit (EXIT_FAILURE);
    }
    stop = b->dirty.off[d] + b->dirty.len[d];
    if (b->alloc.off[a] + b->alloc.len[a] < stop)
      stop = b->alloc.off[a] + b->alloc.len[a];
    if (stop > end)
      stop = end;
    dirty = (b->dirty.flags[d] & DIRTY) != 0;
    zero = (b->alloc.flags[a] & LIBNBD_STATE_ZERO) != 0;
    if (!dirty)
      b->clean_bytes += stop - pos;
    else {
      b->dirty_bytes += stop - pos;
      /* A dirty range is counted once, however it is cut up. */
      if (b->dirty_extents == 0 || b->dirty_end != pos)
        b->dirty_extents++;
      b->dirty_end = stop;
      act (b, zero ? 'z' : 'c', pos, stop - pos);
    }
    pos = stop;
  }
}

int
main (int argc, char *argv[])
{
  struct backup b;
  int64_t size;
  uint64_t pos = 0;
  size_t len;

  if (argc != 4) {
    fprintf (stderr, "usage: %s NBD-URI|UNIX-SOCKET BITMAP TARGET\n",
             argv[0]);
    return EXIT_FAILURE;
  }
  memset (&b, 0, sizeof b);
  b.target = argv[3];
  len = strlen ("qemu:dirty-bitmap:") + strlen (argv[2]) + 1;
  b.dirty_context = malloc (len);
  b.buf = malloc (READ_MAX);
  if (b.dirty_context == NULL || b.buf == NULL) {
    perror ("backup-pull: malloc");
    return EXIT_FAILURE;
  }
  snprintf (b.dirty_context, len, "qemu:dirty-bitmap:%s", argv[2]);

  b.nbd = nbd_create ();
  if (b.nbd == NULL)
    die ("nbd_create");
  if (nbd_add_meta_context (b.nbd, b.dirty_context) == -1 ||
      nbd_add_meta_context (b.nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1)
    die ("nbd_add_meta_context");
  if (strstr (argv[1], "://") != NULL) {
    if (nbd_connect_uri (b.nbd, argv[1]) == -1)
      die ("nbd_connect_uri");
  }
  else if (nbd_connect_unix (b.nbd, argv[1]) == -1)
    die ("nbd_connect_unix");

  if (nbd_can_meta_context (b.nbd, b.dirty_context) != 1) {
    fprintf (stderr, "backup-pull: the export has no bitmap %s "
             "(the server did not agree to %s)\n", argv[2], b.dirty_context);
    return EXIT_FAILURE;
  }
  if (nbd_can_meta_context (b.nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1) {
    fprintf (stderr, "backup-pull: the server does not support %s\n",
             LIBNBD_CONTEXT_BASE_ALLOCATION);
    return EXIT_FAILURE;
  }
  size = nbd_get_size (b.nbd);
  if (size == -1)
    die ("nbd_get_size");

  b.fd = open (b.target, O_RDWR | O_CREAT, 0644);
  if (b.fd == -1)
    die_errno ("open", b.target);
  if (ftruncate (b.fd, size) == -1)
    die_errno ("resize", b.target);

  while (pos < (uint64_t) size) {
    uint64_t count = (uint64_t) size - pos;
    uint64_t end;

    if (count > QUERY_MAX)
      count = QUERY_MAX;
    b.dirty.n = b.alloc.n = 0;
    b.dirty.end = b.alloc.end = pos;
    if (nbd_block_status (b.nbd, count, pos,
                          (nbd_extent_callback) {
                            .callback = on_extents, .user_data = &b },
                          0) == -1)
      die ("nbd_block_status");
    /* Both contexts are described up to the shorter of the two. */
    end = b.dirty.end < b.alloc.end ? b.dirty.end : b.alloc.end;
    if (end > (uint64_t) size)
      end = size;
    if (end <= pos) {
      fprintf (stderr, "backup-pull: no block status at %" PRIu64 "\n", pos);
      return EXIT_FAILURE;
    }
    process (&b, pos, end);
    pos = end;
  }
  flush_pending (&b);
  if (fsync (b.fd) == -1)
    die_errno ("sync", b.target);
  if (close (b.fd) == -1)
    die_errno ("close", b.target);

  printf ("export size: %" PRIi64 " bytes\n", size);
  printf ("dirty: %" PRIu64 " bytes in %" PRIu64 " extents\n",
          b.dirty_bytes, b.dirty_extents);
  printf ("copied: %" PRIu64 " bytes in %" PRIu64 " reads\n",
          b.copied_bytes, b.reads);
  printf ("zeroed: %" PRIu64 " bytes\n", b.zeroed_bytes);
  printf ("clean, not read: %" PRIu64 " bytes\n", b.clean_bytes);

  if (nbd_shutdown (b.nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (b.nbd);
  free (b.dirty.off); free (b.dirty.len); free (b.dirty.flags);
  free (b.alloc.off); free (b.alloc.len); free (b.alloc.flags);
  free (b.dirty_context);
  free (b.buf);
  printf ("backup-pull: OK\n");
  return EXIT_SUCCESS;
}
