/* Differential trace: shutdown and disconnect variants, and commands
 * after them.  argv[1]: URI of a 1 MiB nbdkit memory export (a fresh
 * connection each time). */
#include "trace.h"

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  char buf[512];
  struct cb_spec keep = { "pending", 1, 0 };
  int64_t c;

  if (argc != 2) return 2;

  h = nbd_create ();
  T (nbd_shutdown (h, 0));
  T (nbd_aio_disconnect (h, 0));
  T (nbd_connect_uri (h, argv[1]));
  T (nbd_shutdown (h, 0x10));
  T (nbd_shutdown (h, LIBNBD_SHUTDOWN_ABANDON_PENDING));
  state (h, "after shutdown");
  T (nbd_shutdown (h, 0));
  T (nbd_pread (h, buf, 512, 0, 0));
  T (nbd_aio_pread (h, buf, 512, 0, NBD_NULL_COMPLETION, 0));
  T (nbd_aio_disconnect (h, 0));
  nbd_close (h);

  h = nbd_create ();
  T (nbd_connect_uri (h, argv[1]));
  T (nbd_aio_disconnect (h, 0x10));
  T (nbd_aio_disconnect (h, 0));
  state (h, "after aio_disconnect");
  T (nbd_aio_disconnect (h, 0));
  T (nbd_aio_pread (h, buf, 512, 0, NBD_NULL_COMPLETION, 0));
  T (nbd_pread (h, buf, 512, 0, 0));
  T (nbd_aio_in_flight (h));
  while (!nbd_aio_is_closed (h) && !nbd_aio_is_dead (h))
    if (T (nbd_poll (h, -1)) == -1) break;
  state (h, "after polling");
  T (nbd_aio_in_flight (h));
  T (nbd_aio_get_fd (h) >= 0 ? 0 : -1);
  T (nbd_shutdown (h, 0));
  nbd_close (h);

  /* A command in flight when shutting down. */
  h = nbd_create ();
  T (nbd_connect_uri (h, argv[1]));
  c = T (nbd_aio_pread (h, buf, 512, 0, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &keep, .free = free_cb }, 0));
  T (nbd_shutdown (h, 0));
  state (h, "after shutdown with a command in flight");
  T (nbd_aio_command_completed (h, c));
  nbd_close (h);

  h = nbd_create ();
  T (nbd_connect_uri (h, argv[1]));
  c = T (nbd_aio_pread (h, buf, 512, 0, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &keep, .free = free_cb }, 0));
  T (nbd_shutdown (h, LIBNBD_SHUTDOWN_ABANDON_PENDING));
  state (h, "after shutdown abandoning");
  T (nbd_aio_command_completed (h, c));
  T (nbd_aio_in_flight (h));
  say ("close");
  nbd_close (h);

  /* nbd_close with a command in flight: its callbacks are freed. */
  h = nbd_create ();
  T (nbd_connect_uri (h, argv[1]));
  T (nbd_aio_pread (h, buf, 512, 0, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &keep, .free = free_cb }, 0) > 0);
  say ("close");
  nbd_close (h);
  say ("end");
  return 0;
}
