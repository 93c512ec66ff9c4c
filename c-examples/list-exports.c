/* list-exports: connect in option mode, ask the server for its list of
 * exports, print them, then finish the handshake on the first export
 * listed and print its size.
 *
 *   list-exports nbd+unix:///?socket=/tmp/sock
 *   list-exports /tmp/sock
 *
 * The server must allow listing (nbd-server: allowlist = true).
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

struct listing {
  unsigned count;
  char *first;                  /* copy of the first name listed */
  int out_of_memory;
};

static void
die (const char *what)
{
  fprintf (stderr, "list-exports: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}

static int
connect_target (struct nbd_handle *nbd, const char *target)
{
  if (strstr (target, "://") != NULL)
    return nbd_connect_uri (nbd, target);
  return nbd_connect_unix (nbd, target);
}

/* Called once per export.  The strings belong to libnbd and only live
 * during the call, so the first name is copied.
 */
static int
on_export (void *user_data, const char *name, const char *description)
{
  struct listing *l = user_data;

  l->count++;
  if (description[0] != '\0')
    printf ("export %u: \"%s\" (description: \"%s\")\n",
            l->count, name, description);
  else
    printf ("export %u: \"%s\"\n", l->count, name);
  if (l->first == NULL) {
    l->first = strdup (name);
    if (l->first == NULL)
      l->out_of_memory = 1;
  }
  return 0;
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *nbd;
  struct listing l = { 0, NULL, 0 };
  int64_t size;
  int r;

  if (argc != 2) {
    fprintf (stderr, "usage: %s NBD-URI|UNIX-SOCKET\n", argv[0]);
    return EXIT_FAILURE;
  }

  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");
  /* Stop after the greeting so that we can send our own options. */
  if (nbd_set_opt_mode (nbd, true) == -1)
    die ("nbd_set_opt_mode");
  if (connect_target (nbd, argv[1]) == -1)
    die ("connect");
  if (!nbd_aio_is_negotiating (nbd)) {
    fprintf (stderr, "list-exports: handle is not negotiating (state %s)\n",
             nbd_connection_state (nbd));
    exit (EXIT_FAILURE);
  }

  r = nbd_opt_list (nbd, (nbd_list_callback) {
                      .callback = on_export, .user_data = &l });
  if (r == -1)
    die ("nbd_opt_list");
  if (l.out_of_memory) {
    fprintf (stderr, "list-exports: out of memory\n");
    exit (EXIT_FAILURE);
  }
  if ((unsigned) r != l.count) {
    fprintf (stderr, "list-exports: nbd_opt_list returned %d but the callback "
             "saw %u exports\n", r, l.count);
    exit (EXIT_FAILURE);
  }
  printf ("%u export%s\n", l.count, l.count == 1 ? "" : "s");
  if (l.first == NULL) {
    fprintf (stderr, "list-exports: the server listed no exports\n");
    nbd_opt_abort (nbd);
    nbd_close (nbd);
    return EXIT_FAILURE;
  }

  if (nbd_set_export_name (nbd, l.first) == -1)
    die ("nbd_set_export_name");
  if (nbd_opt_go (nbd) == -1)
    die ("nbd_opt_go");
  if (!nbd_aio_is_ready (nbd)) {
    fprintf (stderr, "list-exports: not ready after nbd_opt_go (state %s)\n",
             nbd_connection_state (nbd));
    exit (EXIT_FAILURE);
  }
  size = nbd_get_size (nbd);
  if (size == -1)
    die ("nbd_get_size");
  printf ("connected to \"%s\": %" PRIi64 " bytes\n", l.first, size);

  free (l.first);
  if (nbd_shutdown (nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (nbd);
  return EXIT_SUCCESS;
}
