/* socket-activation: start an NBD server as a socket-activated child
 * (systemd's LISTEN_PID/LISTEN_FDS protocol), then write a pattern to the
 * start of its export, read it back, verify it and report what was
 * negotiated. The server is stopped when the handle is closed.
 *
 *   socket-activation qemu-nbd -f qcow2 disk.qcow2
 *   socket-activation nbdkit memory 64M
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#define SPAN (1024 * 1024)

static void
die (const char *what)
{
  fprintf (stderr, "socket-activation: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *nbd;
  char *out, *in;
  int64_t size;
  size_t span, i;

  if (argc < 2) {
    fprintf (stderr, "usage: %s SERVER [ARG...]\n", argv[0]);
    return EXIT_FAILURE;
  }

  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");
  if (nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1)
    die ("nbd_add_meta_context");
  if (nbd_connect_systemd_socket_activation (nbd, &argv[1]) == -1)
    die ("nbd_connect_systemd_socket_activation");

  size = nbd_get_size (nbd);
  if (size == -1)
    die ("nbd_get_size");
  printf ("library: %s %s\n", nbd_get_package_name (nbd), nbd_get_version (nbd));
  printf ("server: %s, protocol %s, structured replies %s\n",
          argv[1], nbd_get_protocol (nbd),
          nbd_get_structured_replies_negotiated (nbd) ? "yes" : "no");
  printf ("export size: %" PRIi64 " bytes\n", size);

  span = size < SPAN ? (size_t) size : SPAN;
  out = malloc (span);
  in = malloc (span);
  if (out == NULL || in == NULL) {
    perror ("malloc");
    return EXIT_FAILURE;
  }
  for (i = 0; i < span; i++)
    out[i] = (char) ((i * 31 + 7) & 0xff);

  if (nbd_pwrite (nbd, out, span, 0, 0) == -1)
    die ("nbd_pwrite");
  if (nbd_can_flush (nbd) == 1 && nbd_flush (nbd, 0) == -1)
    die ("nbd_flush");
  if (nbd_pread (nbd, in, span, 0, 0) == -1)
    die ("nbd_pread");
  if (memcmp (in, out, span) != 0) {
    fprintf (stderr, "socket-activation: data read back differs\n");
    return EXIT_FAILURE;
  }
  printf ("wrote, read back and verified %zu bytes\n", span);

  if (nbd_shutdown (nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (nbd);
  free (out);
  free (in);
  return EXIT_SUCCESS;
}
