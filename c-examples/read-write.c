/* read-write: write a known pattern to the start of an export (up to
 * 4 MiB), read it back in differently sized pieces and verify it.  When
 * the server supports them, the program also exercises FUA, flush,
 * write-zeroes (verified by reading zeroes back) and trim (the trimmed
 * range is rewritten and verified again).
 *
 * The byte at absolute offset o is
 *   ((o >> 12) * 151) ^ (o * 7) ^ 0xa5     (truncated to 8 bits)
 * so a test can check the export afterwards; the range reported as
 * "zeroed" holds zeroes instead.
 *
 *   read-write nbd://localhost
 *   read-write /tmp/nbd.sock
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#define AREA_MAX   (4u * 1024 * 1024)
#define WRITE_SIZE (256u * 1024)
#define READ_SIZE  100000u      /* deliberately not a power of two */
#define SMALL      (64u * 1024)

static void
die (const char *what)
{
  fprintf (stderr, "read-write: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}

static int
connect_target (struct nbd_handle *nbd, const char *target)
{
  if (strstr (target, "://") != NULL)
    return nbd_connect_uri (nbd, target);
  return nbd_connect_unix (nbd, target);
}

static uint8_t
pattern_byte (uint64_t o)
{
  return (uint8_t) (((o >> 12) * 151u) ^ (o * 7u) ^ 0xa5u);
}

/* Fills buf with the pattern for [offset, offset+len). */
static void
fill_pattern (uint8_t *buf, uint64_t offset, size_t len)
{
  size_t i;

  for (i = 0; i < len; i++)
    buf[i] = pattern_byte (offset + i);
}

/* Returns true if the capability query says yes; exits on error. */
static bool
can (struct nbd_handle *nbd, int (*query) (struct nbd_handle *),
     const char *name)
{
  int r = query (nbd);

  if (r == -1)
    die (name);
  return r == 1;
}

/* Reads [0, area) back in READ_SIZE pieces; every byte must equal the
 * pattern except [zero_off, zero_off+zero_len) which must be zero.
 */
static void
verify (struct nbd_handle *nbd, uint64_t area, uint64_t zero_off,
        uint64_t zero_len)
{
  uint8_t *buf = malloc (READ_SIZE);
  uint64_t off;
  size_t i;

  if (buf == NULL) {
    perror ("malloc");
    exit (EXIT_FAILURE);
  }
  for (off = 0; off < area; off += READ_SIZE) {
    size_t n = area - off < READ_SIZE ? (size_t) (area - off) : READ_SIZE;

    memset (buf, 0xee, n);
    if (nbd_pread (nbd, buf, n, off, 0) == -1)
      die ("nbd_pread");
    for (i = 0; i < n; i++) {
      uint64_t o = off + i;
      uint8_t want = (o >= zero_off && o < zero_off + zero_len)
        ? 0 : pattern_byte (o);

      if (buf[i] != want) {
        fprintf (stderr,
                 "read-write: mismatch at offset %" PRIu64
                 ": read 0x%02x, expected 0x%02x\n", o, buf[i], want);
        exit (EXIT_FAILURE);
      }
    }
  }
  free (buf);
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *nbd;
  int64_t size;
  uint64_t area, off, zero_off = 0, zero_len = 0;
  uint8_t *buf;
  bool fua, flush;
  unsigned requests = 0;

  if (argc != 2) {
    fprintf (stderr, "usage: %s NBD-URI|UNIX-SOCKET\n", argv[0]);
    return EXIT_FAILURE;
  }

  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");
  if (connect_target (nbd, argv[1]) == -1)
    die ("connect");

  if (can (nbd, nbd_is_read_only, "nbd_is_read_only")) {
    fprintf (stderr, "read-write: the export is read-only\n");
    nbd_close (nbd);
    return EXIT_FAILURE;
  }
  size = nbd_get_size (nbd);
  if (size == -1)
    die ("nbd_get_size");
  if (size < (int64_t) SMALL * 4) {
    fprintf (stderr, "read-write: export too small (%" PRIi64 " bytes)\n",
             size);
    nbd_close (nbd);
    return EXIT_FAILURE;
  }
  area = (uint64_t) size < AREA_MAX ? (uint64_t) size : AREA_MAX;
  printf ("size: %" PRIi64 "\n", size);

  fua = can (nbd, nbd_can_fua, "nbd_can_fua");
  flush = can (nbd, nbd_can_flush, "nbd_can_flush");

  buf = malloc (WRITE_SIZE);
  if (buf == NULL) {
    perror ("malloc");
    exit (EXIT_FAILURE);
  }

  for (off = 0; off < area; off += WRITE_SIZE) {
    size_t n = area - off < WRITE_SIZE ? (size_t) (area - off) : WRITE_SIZE;
    bool last = off + n >= area;
    uint32_t flags = (last && fua) ? LIBNBD_CMD_FLAG_FUA : 0;

    fill_pattern (buf, off, n);
    if (nbd_pwrite (nbd, buf, n, off, flags) == -1)
      die ("nbd_pwrite");
    requests++;
  }
  printf ("wrote %" PRIu64 " bytes at offset 0 (%u requests, fua on last: %s)\n",
          area, requests, fua ? "yes" : "no");

  if (flush) {
    if (nbd_flush (nbd, 0) == -1)
      die ("nbd_flush");
    printf ("flushed\n");
  }

  verify (nbd, area, 0, 0);
  printf ("verified %" PRIu64 " bytes\n", area);

  if (can (nbd, nbd_can_zero, "nbd_can_zero")) {
    zero_off = area / 4;
    zero_len = SMALL;
    if (nbd_zero (nbd, zero_len, zero_off, 0) == -1)
      die ("nbd_zero");
    verify (nbd, area, zero_off, zero_len);
    printf ("zeroed %" PRIu64 " bytes at offset %" PRIu64 ", verified\n",
            zero_len, zero_off);
  }

  if (can (nbd, nbd_can_trim, "nbd_can_trim")) {
    uint64_t trim_off = area - SMALL;

    /* After a trim the content is unspecified, so write it again. */
    if (nbd_trim (nbd, SMALL, trim_off, 0) == -1)
      die ("nbd_trim");
    fill_pattern (buf, trim_off, SMALL);
    if (nbd_pwrite (nbd, buf, SMALL, trim_off, 0) == -1)
      die ("nbd_pwrite");
    verify (nbd, area, zero_off, zero_len);
    printf ("trimmed %u bytes at offset %" PRIu64 ", rewrote, verified\n",
            SMALL, trim_off);
  }

  if (flush && nbd_flush (nbd, 0) == -1)
    die ("nbd_flush");

  free (buf);
  if (nbd_shutdown (nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (nbd);
  printf ("read-write: OK\n");
  return EXIT_SUCCESS;
}
