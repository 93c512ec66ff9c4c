/* get-size: print the size of an NBD export in bytes, on a line of its
 * own, followed by the same size in a human-friendly unit.
 *
 *   get-size nbd+unix:///?socket=/tmp/sock
 *   get-size /tmp/sock
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

static void
die (const char *what)
{
  fprintf (stderr, "get-size: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}

static int
connect_target (struct nbd_handle *nbd, const char *target)
{
  if (strstr (target, "://") != NULL)
    return nbd_connect_uri (nbd, target);
  return nbd_connect_unix (nbd, target);
}

int
main (int argc, char *argv[])
{
  static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  struct nbd_handle *nbd;
  int64_t size;
  double scaled;
  size_t u = 0;

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

  scaled = (double) size;
  while (scaled >= 1024.0 && u + 1 < sizeof units / sizeof units[0]) {
    scaled /= 1024.0;
    u++;
  }

  printf ("%" PRIi64 "\n", size);
  printf ("(%.1f %s)\n", scaled, units[u]);

  if (nbd_shutdown (nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (nbd);
  return EXIT_SUCCESS;
}
