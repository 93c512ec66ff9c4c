/* structured-read: read an export (up to 64 MiB) with
 * nbd_pread_structured and check, from the chunk callback, everything a
 * careful client would: each chunk lies inside its request, subbuf
 * points at the matching place of the caller's buffer, no byte is
 * delivered twice, holes read as zeroes, and when the command succeeds
 * every byte was delivered exactly once.  libnbd does not check overlap
 * and coverage itself, so this program does.  The data is then compared
 * with a plain nbd_pread of the same range.
 *
 * Buffer pre-initialisation is turned off and buffers are pre-filled with
 * 0xaa, so hole chunks must really be zeroed by the library.
 *
 *   structured-read nbd+unix:///?socket=/tmp/sock
 *   structured-read /tmp/sock
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#define AREA_MAX (64u * 1024 * 1024)
#define REQ_MAX  (4u * 1024 * 1024)

struct request {
  uint64_t offset;
  size_t len;
  uint8_t *buf;
  uint8_t *seen;                /* per byte: how many chunks covered it */
  unsigned chunks;
  unsigned problems;
};

struct totals {
  uint64_t data_chunks, data_bytes;
  uint64_t hole_chunks, hole_bytes;
};

static struct totals totals;

static void
die (const char *what)
{
  fprintf (stderr, "structured-read: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}

static int
connect_target (struct nbd_handle *nbd, const char *target)
{
  if (strstr (target, "://") != NULL)
    return nbd_connect_uri (nbd, target);
  return nbd_connect_unix (nbd, target);
}

static int
problem (struct request *r, int *error, const char *msg, uint64_t offset,
         size_t count)
{
  fprintf (stderr, "structured-read: request [%" PRIu64 ", +%zu): chunk at %"
           PRIu64 " length %zu: %s\n", r->offset, r->len, offset, count, msg);
  r->problems++;
  *error = EPROTO;
  return -1;
}

static int
on_chunk (void *user_data, const void *subbuf, size_t count, uint64_t offset,
          unsigned status, int *error)
{
  struct request *r = user_data;
  const uint8_t *p = subbuf;
  size_t rel, i;

  r->chunks++;
  switch (status) {
  case LIBNBD_READ_DATA:
  case LIBNBD_READ_HOLE:
    if (count == 0)
      return problem (r, error, "empty chunk", offset, count);
    if (offset < r->offset || offset - r->offset > r->len ||
        count > r->len - (offset - r->offset))
      return problem (r, error, "outside the request", offset, count);
    rel = (size_t) (offset - r->offset);
    if (p != r->buf + rel)
      return problem (r, error, "subbuf does not match the offset",
                      offset, count);
    for (i = 0; i < count; i++) {
      if (r->seen[rel + i]++ != 0)
        return problem (r, error, "overlaps an earlier chunk", offset, count);
    }
    if (status == LIBNBD_READ_HOLE) {
      for (i = 0; i < count; i++)
        if (p[i] != 0)
          return problem (r, error, "hole chunk not zeroed", offset, count);
      totals.hole_chunks++;
      totals.hole_bytes += count;
    }
    else {
      totals.data_chunks++;
      totals.data_bytes += count;
    }
    return 0;
  case LIBNBD_READ_ERROR:
    fprintf (stderr, "structured-read: server reported %s at offset %" PRIu64
             "\n", strerror (*error), offset);
    return 0;                   /* the command fails with the server's error */
  default:
    return problem (r, error, "unknown chunk status", offset, count);
  }
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *nbd;
  struct request r;
  uint8_t *plain;
  int64_t size, max;
  uint64_t area, off, nreq = 0;
  size_t req_size = REQ_MAX, i;
  int sr, df;

  if (argc != 2) {
    fprintf (stderr, "usage: %s NBD-URI|UNIX-SOCKET\n", argv[0]);
    return EXIT_FAILURE;
  }

  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");
  if (nbd_set_pread_initialize (nbd, false) == -1)
    die ("nbd_set_pread_initialize");
  if (connect_target (nbd, argv[1]) == -1)
    die ("connect");

  sr = nbd_get_structured_replies_negotiated (nbd);
  if (sr == -1)
    die ("nbd_get_structured_replies_negotiated");
  if (!sr) {
    fprintf (stderr, "structured-read: the server did not negotiate "
             "structured replies\n");
    nbd_close (nbd);
    return EXIT_FAILURE;
  }
  printf ("structured replies: negotiated\n");

  size = nbd_get_size (nbd);
  if (size == -1)
    die ("nbd_get_size");
  max = nbd_get_block_size (nbd, LIBNBD_SIZE_MAXIMUM);
  if (max == -1)
    die ("nbd_get_block_size");
  if (max > 0 && (uint64_t) max < req_size)
    req_size = (size_t) max;
  area = (uint64_t) size < AREA_MAX ? (uint64_t) size : AREA_MAX;

  r.buf = malloc (req_size);
  r.seen = malloc (req_size);
  plain = malloc (req_size);
  if (r.buf == NULL || r.seen == NULL || plain == NULL) {
    perror ("malloc");
    exit (EXIT_FAILURE);
  }

  for (off = 0; off < area; off += r.len) {
    r.offset = off;
    r.len = area - off < req_size ? (size_t) (area - off) : req_size;
    r.chunks = 0;
    r.problems = 0;
    memset (r.buf, 0xaa, r.len);
    memset (r.seen, 0, r.len);

    if (nbd_pread_structured (nbd, r.buf, r.len, r.offset,
                              (nbd_chunk_callback) {
                                .callback = on_chunk, .user_data = &r },
                              0) == -1)
      die ("nbd_pread_structured");
    if (r.problems) {
      fprintf (stderr, "structured-read: read succeeded despite %u bad "
               "chunks\n", r.problems);
      exit (EXIT_FAILURE);
    }
    if (r.chunks == 0) {
      fprintf (stderr, "structured-read: successful read without chunks\n");
      exit (EXIT_FAILURE);
    }
    for (i = 0; i < r.len; i++) {
      if (r.seen[i] != 1) {
        fprintf (stderr, "structured-read: byte at %" PRIu64 " covered %u "
                 "times\n", r.offset + i, r.seen[i]);
        exit (EXIT_FAILURE);
      }
    }

    memset (plain, 0x55, r.len);
    if (nbd_pread (nbd, plain, r.len, r.offset, 0) == -1)
      die ("nbd_pread");
    if (memcmp (plain, r.buf, r.len) != 0) {
      fprintf (stderr, "structured-read: structured and plain reads differ "
               "in [%" PRIu64 ", +%zu)\n", r.offset, r.len);
      exit (EXIT_FAILURE);
    }
    nreq++;
  }

  printf ("read %" PRIu64 " bytes in %" PRIu64 " requests of up to %zu bytes\n",
          area, nreq, req_size);
  printf ("data chunks: %" PRIu64 " (%" PRIu64 " bytes)\n",
          totals.data_chunks, totals.data_bytes);
  printf ("hole chunks: %" PRIu64 " (%" PRIu64 " bytes)\n",
          totals.hole_chunks, totals.hole_bytes);
  printf ("every byte covered exactly once; data matches nbd_pread\n");

  /* With DF the server must answer in one piece. */
  df = nbd_can_df (nbd);
  if (df == -1)
    die ("nbd_can_df");
  if (df) {
    r.offset = 0;
    r.len = area < req_size ? (size_t) area : req_size;
    r.chunks = 0;
    r.problems = 0;
    memset (r.buf, 0xaa, r.len);
    memset (r.seen, 0, r.len);
    if (nbd_pread_structured (nbd, r.buf, r.len, 0,
                              (nbd_chunk_callback) {
                                .callback = on_chunk, .user_data = &r },
                              LIBNBD_CMD_FLAG_DF) == -1)
      die ("nbd_pread_structured (DF)");
    printf ("df read: %u chunk%s\n", r.chunks, r.chunks == 1 ? "" : "s");
    if (r.chunks != 1 || r.problems) {
      fprintf (stderr, "structured-read: DF read was fragmented\n");
      exit (EXIT_FAILURE);
    }
  }

  free (r.buf);
  free (r.seen);
  free (plain);
  if (nbd_shutdown (nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (nbd);
  printf ("structured-read: OK\n");
  return EXIT_SUCCESS;
}
