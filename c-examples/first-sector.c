/* first-sector: connect to an NBD server, read the first 512 bytes of
 * the export and print them as a hex dump, sixteen bytes per line, with
 * a printable-character column on the right.
 *
 *   first-sector nbd://localhost/disk
 *   first-sector /run/nbd.sock
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#define SECTOR 512

static void
die (const char *what)
{
  fprintf (stderr, "first-sector: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}

/* A target containing "://" is a URI, anything else a Unix socket path. */
static int
connect_target (struct nbd_handle *nbd, const char *target)
{
  if (strstr (target, "://") != NULL)
    return nbd_connect_uri (nbd, target);
  return nbd_connect_unix (nbd, target);
}

static void
hexdump (const unsigned char *p, size_t len)
{
  size_t row, i;

  for (row = 0; row < len; row += 16) {
    printf ("%08zx ", row);
    for (i = row; i < row + 16; i++) {
      if (i % 8 == 0)
        putchar (' ');
      if (i < len)
        printf ("%02x ", p[i]);
      else
        printf ("   ");
    }
    printf (" |");
    for (i = row; i < row + 16 && i < len; i++)
      putchar (isprint (p[i]) ? p[i] : '.');
    printf ("|\n");
  }
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *nbd;
  unsigned char sector[SECTOR];
  int64_t size;
  size_t len = SECTOR;

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
  if (size == 0) {
    fprintf (stderr, "first-sector: the export is empty\n");
    nbd_close (nbd);
    return EXIT_FAILURE;
  }
  if ((uint64_t) size < len)
    len = (size_t) size;

  memset (sector, 0, sizeof sector);
  if (nbd_pread (nbd, sector, len, 0, 0) == -1)
    die ("nbd_pread");

  hexdump (sector, len);

  if (nbd_shutdown (nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (nbd);
  return EXIT_SUCCESS;
}
