/* Differential trace: handle, info and debug calls, before and after
 * connecting.  argv[1]: a URI of an nbdkit memory export. */
#include "trace.h"

static int dbg_calls;

static int
debug_cb (void *user_data, const char *context, const char *msg)
{
  (void) user_data; (void) context; (void) msg;
  dbg_calls++;
  return 0;
}

static void
debug_free (void *user_data)
{
  say ("  free debug %s", (const char *) user_data);
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  char *name;

  if (argc != 2) return 2;
  h = nbd_create ();
  if (!h) return 1;

  TC (nbd_get_package_name (h));
  TC (nbd_get_version (h));
  T (nbd_supports_uri (h));
  T (nbd_supports_tls (h));
  T (nbd_supports_vsock (h));
  name = nbd_get_handle_name (h);
  say ("handle name starts with nbd: %d", name && strncmp (name, "nbd", 3) == 0);
  free (name);
  T (nbd_set_handle_name (h, "diff"));
  TS (nbd_get_handle_name (h));
  T (nbd_set_handle_name (h, NULL));
  T (nbd_get_private_data (h));
  T (nbd_set_private_data (h, 42));
  T (nbd_set_private_data (h, 7));
  T (nbd_get_private_data (h));
  T (nbd_get_handle_size (h) > 0);
  state (h, "created");

  /* Info before connecting: wrong state. */
  T (nbd_get_size (h));
  T (nbd_is_read_only (h));
  T (nbd_can_flush (h));
  T (nbd_can_fua (h));
  T (nbd_can_trim (h));
  T (nbd_can_zero (h));
  T (nbd_can_fast_zero (h));
  T (nbd_can_df (h));
  T (nbd_can_cache (h));
  T (nbd_can_multi_conn (h));
  T (nbd_can_block_status_payload (h));
  T (nbd_is_rotational (h));
  T (nbd_can_meta_context (h, "base:allocation"));
  T (nbd_can_meta_context (h, NULL));
  T (nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM));
  T (nbd_get_protocol (h) == NULL);
  T (nbd_get_structured_replies_negotiated (h));
  T (nbd_get_extended_headers_negotiated (h));
  T (nbd_get_tls_negotiated (h));
  TS (nbd_get_canonical_export_name (h));
  TS (nbd_get_export_description (h));
  TS (nbd_get_export_name (h));
  T (nbd_get_nr_meta_contexts (h));
  TS (nbd_get_meta_context (h, 0));
  TS (nbd_get_uri (h));
  T (nbd_get_handshake_flags (h));
  T (nbd_stats_bytes_sent (h));
  T (nbd_stats_bytes_received (h));
  T (nbd_stats_chunks_sent (h));
  T (nbd_stats_chunks_received (h));
  T (nbd_aio_in_flight (h));
  T (nbd_aio_get_fd (h));
  T (nbd_aio_get_direction (h));
  T (nbd_aio_peek_command_completed (h));
  T (nbd_aio_command_completed (h, 1));
  T (nbd_get_subprocess_pid (h));

  /* Settings and their getters. */
  T (nbd_get_debug (h));
  T (nbd_set_debug (h, true));
  T (nbd_get_debug (h));
  T (nbd_set_debug (h, false));
  T (nbd_set_debug_callback (h, (nbd_debug_callback) { .callback = debug_cb,
                                  .user_data = "one", .free = debug_free }));
  T (nbd_set_debug_callback (h, (nbd_debug_callback) { .callback = debug_cb,
                                  .user_data = "two", .free = debug_free }));
  T (nbd_set_debug_callback (h, (nbd_debug_callback) { .callback = NULL,
                                  .user_data = "three", .free = debug_free }));
  T (nbd_clear_debug_callback (h));
  T (nbd_clear_debug_callback (h));
  T (nbd_set_debug_callback (h, (nbd_debug_callback) { .callback = debug_cb,
                                  .user_data = "four", .free = debug_free }));
  T (nbd_get_export_name (h) != NULL);
  T (nbd_set_export_name (h, "x"));
  TS (nbd_get_export_name (h));
  T (nbd_set_export_name (h, ""));
  T (nbd_set_export_name (h, NULL));
  T (nbd_get_full_info (h));
  T (nbd_set_full_info (h, true));
  T (nbd_get_full_info (h));
  T (nbd_get_pread_initialize (h));
  T (nbd_set_pread_initialize (h, false));
  T (nbd_get_pread_initialize (h));
  T (nbd_get_request_block_size (h));
  T (nbd_set_request_block_size (h, false));
  T (nbd_get_request_block_size (h));
  T (nbd_get_request_structured_replies (h));
  T (nbd_get_request_extended_headers (h));
  T (nbd_get_request_meta_context (h));
  T (nbd_get_handshake_flags (h));
  T (nbd_set_handshake_flags (h, 0x100));
  T (nbd_set_handshake_flags (h, LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE));
  T (nbd_get_handshake_flags (h));
  T (nbd_set_handshake_flags (h, 3));
  T (nbd_get_socket_activation_name (h) != NULL);
  T (nbd_add_meta_context (h, "base:allocation"));
  T (nbd_add_meta_context (h, NULL));
  T (nbd_get_nr_meta_contexts (h));
  TS (nbd_get_meta_context (h, 0));
  TS (nbd_get_meta_context (h, 1));
  T (nbd_clear_meta_contexts (h));
  T (nbd_get_nr_meta_contexts (h));
  T (nbd_add_meta_context (h, "base:allocation"));

  /* Connect (with debug messages going to the callback), then the same
   * questions. */
  T (nbd_set_debug (h, true));
  T (nbd_connect_uri (h, argv[1]));
  T (nbd_set_debug (h, false));
  state (h, "connected");
  T (nbd_get_size (h));
  T (nbd_is_read_only (h));
  T (nbd_can_flush (h));
  T (nbd_can_fua (h));
  T (nbd_can_trim (h));
  T (nbd_can_zero (h));
  T (nbd_can_fast_zero (h));
  T (nbd_can_df (h));
  T (nbd_can_cache (h));
  T (nbd_can_multi_conn (h));
  T (nbd_can_block_status_payload (h));
  T (nbd_is_rotational (h));
  T (nbd_can_meta_context (h, "base:allocation"));
  T (nbd_can_meta_context (h, "nope:nope"));
  T (nbd_can_meta_context (h, NULL));
  T (nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM));
  T (nbd_get_block_size (h, LIBNBD_SIZE_PREFERRED));
  T (nbd_get_block_size (h, LIBNBD_SIZE_MAXIMUM));
  T (nbd_get_block_size (h, LIBNBD_SIZE_PAYLOAD));
  T (nbd_get_block_size (h, 99));
  TC (nbd_get_protocol (h));
  T (nbd_get_structured_replies_negotiated (h));
  T (nbd_get_extended_headers_negotiated (h));
  T (nbd_get_tls_negotiated (h));
  TS (nbd_get_canonical_export_name (h));
  TS (nbd_get_export_description (h));
  TS (nbd_get_export_name (h));
  T (nbd_get_handshake_flags (h));
  T (nbd_aio_in_flight (h));
  T (nbd_aio_get_fd (h) >= 0);
  T (nbd_aio_get_direction (h));
  T (nbd_aio_peek_command_completed (h));
  T (nbd_aio_command_completed (h, 1));
  T (nbd_get_subprocess_pid (h));
  T (nbd_stats_bytes_sent (h) > 0);
  T (nbd_stats_bytes_received (h) > 0);
  T (nbd_stats_chunks_sent (h) > 0);
  T (nbd_stats_chunks_received (h) > 0);
  /* Settings that may only change before connecting. */
  T (nbd_set_export_name (h, "y"));
  T (nbd_set_full_info (h, false));
  T (nbd_set_request_block_size (h, true));
  T (nbd_set_handshake_flags (h, 0));
  T (nbd_add_meta_context (h, "x:y"));
  T (nbd_clear_meta_contexts (h));
  T (nbd_set_handle_name (h, "after"));
  T (nbd_set_private_data (h, 9));
  T (nbd_set_pread_initialize (h, true));
  T (nbd_set_debug (h, false));
  say ("debug callback called: %d", dbg_calls > 0);
  T (nbd_shutdown (h, 0));
  state (h, "shut down");
  T (nbd_get_size (h));
  T (nbd_can_flush (h));
  TC (nbd_get_protocol (h));
  T (nbd_aio_in_flight (h));
  T (nbd_aio_get_direction (h));
  say ("close");
  nbd_close (h);
  say ("end");
  return 0;
}
