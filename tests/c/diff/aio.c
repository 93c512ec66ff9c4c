/* Differential trace: aio commands and the poll loop; completion
 * callbacks' return values and *error; completion order; retirement.
 * argv[1]: URI of a 1 MiB nbdkit memory export; argv[2]: an export whose
 * reads fail with EIO. */
#include "trace.h"

static int
chunk_cb (void *user_data, const void *subbuf, size_t count, uint64_t offset,
          unsigned status, int *error)
{
  (void) subbuf; (void) status;
  say ("  chunk %s count=%zu offset=%" PRIu64 " *error=%s",
       (const char *) user_data, count, offset, errname (*error));
  return 0;
}

static void
free_chunk (void *user_data)
{
  say ("  free chunk %s", (const char *) user_data);
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h, *e;
  static char buf[4][4096], data[4096];
  struct cb_spec ok = { "ok", 1, 0 }, keep = { "keep", 0, 0 },
    seterr = { "seterr", -1, EPERM }, fail0 = { "fail0", -1, 0 },
    setonly = { "setonly", 1, ENOSPC }, e1 = { "e1", 1, 0 };
  int64_t c1, c2, c3, c4, c5;

  if (argc != 3) return 2;
  memset (data, 0x33, sizeof data);
  h = nbd_create ();
  T (nbd_aio_pread (h, buf[0], 512, 0, NBD_NULL_COMPLETION, 0));
  T (nbd_aio_notify_read (h));
  T (nbd_aio_notify_write (h));
  T (nbd_poll (h, 0));
  T (nbd_aio_connect_uri (h, argv[1]));
  state (h, "after aio_connect_uri");
  T (nbd_aio_connect_uri (h, argv[1]));
  while (!nbd_aio_is_ready (h) && !nbd_aio_is_dead (h))
    if (nbd_poll (h, -1) == -1) break;
  state (h, "after polling");

  /* Cookies, in flight, retirement. */
  c1 = T (nbd_aio_pwrite (h, data, 4096, 0, NBD_NULL_COMPLETION, 0));
  c2 = T (nbd_aio_pread (h, buf[0], 4096, 0, NBD_NULL_COMPLETION, 0));
  T (nbd_aio_in_flight (h));
  /* Both requests are written; waiting for replies is "ready", not
   * "processing" (nbd_aio_is_processing(3)). */
  state (h, "with replies due");
  T (wait_for (h, c1));
  T (wait_for (h, c2));
  dump ("read back", buf[0], 8);
  T (nbd_aio_command_completed (h, c1));
  T (nbd_aio_command_completed (h, 999));
  T (nbd_aio_command_completed (h, 0));
  T (nbd_aio_command_completed (h, -5));
  T (nbd_aio_peek_command_completed (h));
  T (nbd_aio_in_flight (h));

  /* Completion callbacks: return 1 retires, 0 keeps, *error and -1. */
  c1 = T (nbd_aio_pread (h, buf[0], 512, 0, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &ok, .free = free_cb }, 0));
  c2 = T (nbd_aio_pread (h, buf[1], 512, 0, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &keep, .free = free_cb }, 0));
  c3 = T (nbd_aio_pread (h, buf[2], 512, 0, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &seterr, .free = free_cb }, 0));
  c4 = T (nbd_aio_pread (h, buf[3], 512, 0, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &fail0, .free = free_cb }, 0));
  c5 = T (nbd_aio_flush (h, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &setonly, .free = free_cb }, 0));
  while (nbd_aio_in_flight (h) > 0)
    if (nbd_poll (h, -1) == -1) break;
  say ("all done");
  T (nbd_aio_command_completed (h, c1));
  T (nbd_aio_command_completed (h, c2));
  T (nbd_aio_command_completed (h, c2));
  T (nbd_aio_command_completed (h, c3));
  T (nbd_aio_command_completed (h, c4));
  T (nbd_aio_command_completed (h, c5));
  T (nbd_aio_peek_command_completed (h));

  /* Mid-command callbacks are freed before the completion callback. */
  c1 = T (nbd_aio_pread_structured (h, buf[0], 1024, 0,
        (nbd_chunk_callback) { .callback = chunk_cb, .user_data = "s1",
                               .free = free_chunk },
        (nbd_completion_callback) { .callback = completion_cb,
                                    .user_data = &e1, .free = free_cb }, 0));
  T (wait_for (h, c1));
  /* A completion callback that returns 0 leaves the command to
     nbd_aio_command_completed: when are both callbacks freed? */
  c1 = T (nbd_aio_pread_structured (h, buf[0], 1024, 0,
        (nbd_chunk_callback) { .callback = chunk_cb, .user_data = "s3",
                               .free = free_chunk },
        (nbd_completion_callback) { .callback = completion_cb,
                                    .user_data = &keep, .free = free_cb }, 0));
  while (nbd_aio_in_flight (h) > 0)
    if (nbd_poll (h, -1) == -1) break;
  T (nbd_aio_in_flight (h));
  T (nbd_aio_command_completed (h, c1));
  /* A call refused at once still frees both callbacks. */
  T (nbd_aio_pread_structured (h, buf[0], 1024, 0,
        (nbd_chunk_callback) { .callback = chunk_cb, .user_data = "s2",
                               .free = free_chunk },
        (nbd_completion_callback) { .callback = completion_cb,
                                    .user_data = &e1, .free = free_cb },
        0x4000));
  T (nbd_aio_pread (h, buf[0], 0, 0, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &e1, .free = free_cb }, 0));

  /* Many in flight: peek returns them in order of completion. */
  c1 = T (nbd_aio_pread (h, buf[0], 512, 0, NBD_NULL_COMPLETION, 0));
  c2 = T (nbd_aio_pread (h, buf[1], 512, 512, NBD_NULL_COMPLETION, 0));
  while (nbd_aio_in_flight (h) > 0)
    if (nbd_poll (h, -1) == -1) break;
  T (nbd_aio_peek_command_completed (h) == c1 || nbd_aio_peek_command_completed (h) == c2);
  T (nbd_aio_command_completed (h, c2));
  T (nbd_aio_command_completed (h, c1));
  T (nbd_aio_peek_command_completed (h));
  T (nbd_aio_get_direction (h));
  T (nbd_poll (h, 0));
  T (nbd_poll2 (h, -1, 0));
  T (nbd_aio_disconnect (h, 0));
  state (h, "after aio_disconnect");
  T (nbd_aio_in_flight (h));
  T (nbd_aio_get_direction (h));
  for (int i = 0; i < 50 && !nbd_aio_is_closed (h) && !nbd_aio_is_dead (h); i++)
    if (T (nbd_poll (h, 1000)) == -1) break;
  state (h, "after polling");
  nbd_close (h);

  /* A failing server command: the completion callback sees *error. */
  e = nbd_create ();
  T (nbd_connect_uri (e, argv[2]));
  c1 = T (nbd_aio_pread (e, buf[0], 512, 0, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &keep, .free = free_cb }, 0));
  c2 = T (nbd_aio_pread (e, buf[0], 512, 0, NBD_NULL_COMPLETION, 0));
  T (wait_for (e, c1));
  T (wait_for (e, c2));
  T (nbd_aio_command_completed (e, c1));
  T (nbd_aio_command_completed (e, c2));
  say ("close");
  nbd_close (e);
  say ("end");
  return 0;
}
