/* tls-psk: connect to an NBD server with TLS authenticated by a
 * pre-shared key, refusing to go on in clear (LIBNBD_TLS_REQUIRE), then
 * write a pattern, read it back, verify it and close the session cleanly.
 *
 *   tls-psk KEYFILE USERNAME UNIX-SOCKET
 *   tls-psk KEYFILE USERNAME HOST PORT
 *
 * KEYFILE holds "username:hexkey" lines, as psktool writes them:
 *
 *   psktool -u alice -p keys.psk
 *   nbdkit -U /tmp/sock --tls=require --tls-psk=keys.psk memory 64M
 *   tls-psk keys.psk alice /tmp/sock
 *
 * The same connection as a URI:
 *   nbds+unix://alice@/?socket=/tmp/sock&tls-psk-file=keys.psk
 * (a URI naming a local file needs nbd_set_uri_allow_local_file).
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#define SPAN (256 * 1024)

static void
die (const char *what)
{
  fprintf (stderr, "tls-psk: %s: %s (errno %d)\n",
           what, nbd_get_error (), nbd_get_errno ());
  exit (EXIT_FAILURE);
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *nbd;
  char *out, *in;
  int64_t size;
  size_t span, i;

  if (argc != 4 && argc != 5) {
    fprintf (stderr, "usage: %s KEYFILE USERNAME (UNIX-SOCKET | HOST PORT)\n",
             argv[0]);
    return EXIT_FAILURE;
  }

  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");
  if (nbd_supports_tls (nbd) != 1) {
    fprintf (stderr, "tls-psk: this libnbd has no TLS support\n");
    return EXIT_FAILURE;
  }
  if (nbd_set_tls (nbd, LIBNBD_TLS_REQUIRE) == -1)
    die ("nbd_set_tls");
  if (nbd_set_tls_psk_file (nbd, argv[1]) == -1)
    die ("nbd_set_tls_psk_file");
  if (nbd_set_tls_username (nbd, argv[2]) == -1)
    die ("nbd_set_tls_username");

  if (argc == 4) {
    if (nbd_connect_unix (nbd, argv[3]) == -1)
      die ("nbd_connect_unix");
  }
  else if (nbd_connect_tcp (nbd, argv[3], argv[4]) == -1)
    die ("nbd_connect_tcp");

  if (nbd_get_tls_negotiated (nbd) != 1) {
    fprintf (stderr, "tls-psk: connected without TLS\n");
    return EXIT_FAILURE;
  }
  size = nbd_get_size (nbd);
  if (size == -1)
    die ("nbd_get_size");
  printf ("library: %s %s\n", nbd_get_package_name (nbd), nbd_get_version (nbd));
  printf ("protocol: %s with TLS (PSK user %s)\n", nbd_get_protocol (nbd), argv[2]);
  printf ("export size: %" PRIi64 " bytes\n", size);

  span = size < SPAN ? (size_t) size : SPAN;
  out = malloc (span);
  in = malloc (span);
  if (out == NULL || in == NULL) {
    perror ("malloc");
    return EXIT_FAILURE;
  }
  for (i = 0; i < span; i++)
    out[i] = (char) ((i * 13 + 5) & 0xff);
  if (nbd_pwrite (nbd, out, span, 0, 0) == -1)
    die ("nbd_pwrite");
  if (nbd_pread (nbd, in, span, 0, 0) == -1)
    die ("nbd_pread");
  if (memcmp (in, out, span) != 0) {
    fprintf (stderr, "tls-psk: data read back differs\n");
    return EXIT_FAILURE;
  }
  printf ("wrote, read back and verified %zu bytes over TLS\n", span);

  /* NBD_CMD_DISC, then TLS close_notify. */
  if (nbd_shutdown (nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (nbd);
  free (out);
  free (in);
  return EXIT_SUCCESS;
}
