/* Differential trace: opt mode.  argv[1]: URI of an nbdkit memory export;
 * argv[2]: the Unix socket of the same kind of server (for
 * nbd_connect_unix). */
#include "trace.h"

static int
list_cb (void *user_data, const char *name, const char *description)
{
  say ("  list %s name=\"%s\" description=\"%s\"", (const char *) user_data,
       name, description);
  return 0;
}

static int
ctx_cb (void *user_data, const char *name)
{
  say ("  context %s \"%s\"", (const char *) user_data, name);
  return 0;
}

/* The aio form's callbacks may run inside nbd_aio_opt_list or later in
 * the poll loop, depending on timing: they only count, printed after. */
static int opt_done, opt_listed, opt_err = -1, opt_freed;

static int
opt_done_cb (void *user_data, int *error)
{
  (void) user_data;
  opt_err = *error;
  opt_done = 1;
  return 1;
}

static int
quiet_list_cb (void *user_data, const char *name, const char *description)
{
  (void) user_data; (void) name; (void) description;
  opt_listed++;
  return 0;
}

static void
quiet_free (void *user_data)
{
  (void) user_data;
  opt_freed++;
}

static int
fail_list_cb (void *user_data, const char *name, const char *description)
{
  (void) description;
  say ("  list %s name=\"%s\" -> -1", (const char *) user_data, name);
  return -1;
}

static int
fail_ctx_cb (void *user_data, const char *name)
{
  say ("  context %s \"%s\" -> -1", (const char *) user_data, name);
  return -1;
}

static void
free_tag (void *user_data)
{
  say ("  free %s", (const char *) user_data);
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  int64_t c;

  if (argc != 3) return 2;
  h = nbd_create ();
  T (nbd_get_opt_mode (h));
  T (nbd_opt_go (h));
  T (nbd_opt_abort (h));
  T (nbd_opt_info (h));
  T (nbd_opt_list (h, (nbd_list_callback) { .callback = list_cb, .user_data = "early", .free = free_tag }));
  T (nbd_set_opt_mode (h, true));
  T (nbd_get_opt_mode (h));
  T (nbd_connect_unix (h, argv[2]));
  state (h, "after connect in opt mode");
  T (nbd_get_size (h));
  T (nbd_set_opt_mode (h, false));
  T (nbd_opt_list (h, (nbd_list_callback) { .callback = list_cb, .user_data = "l", .free = free_tag }));
  T (nbd_opt_list (h, (nbd_list_callback) { .callback = NULL, .user_data = "null" }));
  T (nbd_opt_structured_reply (h));
  T (nbd_opt_extended_headers (h));
  T (nbd_opt_starttls (h));
  T (nbd_get_structured_replies_negotiated (h));
  T (nbd_set_export_name (h, "nonexistent-but-memory-accepts"));
  T (nbd_opt_info (h));
  T (nbd_get_size (h));
  T (nbd_set_export_name (h, ""));
  T (nbd_opt_info (h));
  T (nbd_get_size (h));
  T (nbd_is_read_only (h));
  T (nbd_opt_list_meta_context (h, (nbd_context_callback) { .callback = ctx_cb, .user_data = "lmc", .free = free_tag }));
  {
    char *q[] = { (char *) "base:", NULL };
    T (nbd_opt_list_meta_context_queries (h, q, (nbd_context_callback) { .callback = ctx_cb, .user_data = "lmcq", .free = free_tag }));
    T (nbd_opt_list_meta_context_queries (h, NULL, (nbd_context_callback) { .callback = ctx_cb, .user_data = "lmcq-null", .free = free_tag }));
    T (nbd_opt_set_meta_context_queries (h, q, (nbd_context_callback) { .callback = ctx_cb, .user_data = "smcq", .free = free_tag }));
  }
  T (nbd_add_meta_context (h, "base:allocation"));
  T (nbd_opt_set_meta_context (h, (nbd_context_callback) { .callback = ctx_cb, .user_data = "smc", .free = free_tag }));
  T (nbd_get_nr_meta_contexts (h));
  T (nbd_set_request_meta_context (h, false));
  T (nbd_get_request_meta_context (h));
  c = T (nbd_aio_opt_list (h, (nbd_list_callback) { .callback = quiet_list_cb, .free = quiet_free },
                           (nbd_completion_callback) { .callback = opt_done_cb, .free = quiet_free }));
  for (int i = 0; i < 50 && c != -1 && !opt_done; i++)
    if (nbd_poll (h, 1000) == -1) break;
  say ("aio_opt_list: listed=%d done=%d error=%s freed=%d", opt_listed,
       opt_done, errname (opt_err), opt_freed);
  state (h, "after aio_opt_list");
  T (nbd_opt_go (h));
  state (h, "after opt_go");
  T (nbd_get_size (h));
  T (nbd_opt_go (h));
  T (nbd_opt_abort (h));
  T (nbd_can_meta_context (h, "base:allocation"));
  T (nbd_shutdown (h, 0));
  nbd_close (h);

  /* opt_abort ends the connection. */
  h = nbd_create ();
  T (nbd_set_opt_mode (h, true));
  T (nbd_connect_uri (h, argv[1]));
  T (nbd_opt_abort (h));
  state (h, "after opt_abort");
  T (nbd_opt_go (h));
  T (nbd_pread (h, (char[512]){0}, 512, 0, 0));
  nbd_close (h);

  /* Opt mode with a URI naming an export; opt_go with a missing export
   * on a server that checks names (nbdkit exportname filter). */
  h = nbd_create ();
  T (nbd_set_opt_mode (h, true));
  T (nbd_connect_uri (h, argv[1]));
  T (nbd_set_export_name (h, "nope"));
  T (nbd_opt_go (h));
  state (h, "after failed opt_go");
  T (nbd_set_export_name (h, ""));
  T (nbd_opt_go (h));
  state (h, "after opt_go");
  nbd_close (h);
  /* Callbacks returning -1 (the server's answers go on). */
  h = nbd_create ();
  T (nbd_set_opt_mode (h, true));
  T (nbd_connect_uri (h, argv[1]));
  T (nbd_opt_list (h, (nbd_list_callback) { .callback = fail_list_cb, .user_data = "fail", .free = free_tag }));
  T (nbd_opt_list_meta_context (h, (nbd_context_callback) { .callback = fail_ctx_cb, .user_data = "fail", .free = free_tag }));
  /* A missing export: the aio form's completion sees the error. */
  T (nbd_set_export_name (h, "missing"));
  opt_done = 0; opt_err = -1; opt_freed = 0;
  c = T (nbd_aio_opt_info (h, (nbd_completion_callback) { .callback = opt_done_cb, .free = quiet_free }));
  for (int i = 0; i < 50 && c != -1 && !opt_done; i++)
    if (nbd_poll (h, 1000) == -1) break;
  say ("aio_opt_info: done=%d error=%s freed=%d", opt_done, errname (opt_err), opt_freed);
  state (h, "after failed aio_opt_info");
  T (nbd_opt_info (h));
  T (nbd_get_size (h));
  opt_done = 0; opt_err = -1; opt_freed = 0;
  c = T (nbd_aio_opt_go (h, (nbd_completion_callback) { .callback = opt_done_cb, .free = quiet_free }));
  for (int i = 0; i < 50 && c != -1 && !opt_done; i++)
    if (nbd_poll (h, 1000) == -1) break;
  say ("aio_opt_go: done=%d error=%s freed=%d", opt_done, errname (opt_err), opt_freed);
  state (h, "after failed aio_opt_go");
  T (nbd_set_export_name (h, "other"));
  T (nbd_opt_go (h));
  TS (nbd_get_export_name (h));
  TS (nbd_get_canonical_export_name (h));
  nbd_close (h);

  /* Opt mode without asking for fixed newstyle. */
  h = nbd_create ();
  T (nbd_set_handshake_flags (h, 0));
  T (nbd_set_opt_mode (h, true));
  T (nbd_connect_uri (h, argv[1]));
  state (h, "opt mode, no fixed newstyle");
  T (nbd_opt_list (h, (nbd_list_callback) { .callback = list_cb, .user_data = "nofixed", .free = free_tag }));
  T (nbd_opt_go (h));
  state (h, "after opt_go");
  TC (nbd_get_protocol (h));
  nbd_close (h);

  /* Opt mode without requesting structured replies, then asking. */
  h = nbd_create ();
  T (nbd_set_request_structured_replies (h, false));
  T (nbd_set_request_extended_headers (h, false));
  T (nbd_set_opt_mode (h, true));
  T (nbd_connect_uri (h, argv[1]));
  T (nbd_get_structured_replies_negotiated (h));
  T (nbd_opt_structured_reply (h));
  T (nbd_opt_structured_reply (h));
  T (nbd_get_structured_replies_negotiated (h));
  T (nbd_opt_extended_headers (h));
  T (nbd_opt_go (h));
  T (nbd_get_structured_replies_negotiated (h));
  nbd_close (h);
  say ("end");
  return 0;
}
