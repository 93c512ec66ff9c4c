/* Differential trace: the remaining aio commands (one at a time, so that
 * callbacks run in a repeatable order), the aio_opt_* calls, aio connects
 * of a subprocess, nbd_connection_state and nbd_get_error.
 * argv[1]: URI of a 1 MiB nbdkit memory export; argv[2]: nbdkit's run
 * wrapper; argv[3]: the memory plugin's path. */
#include "trace.h"

static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr_entries, int *error)
{
  say ("  extents %s %s offset=%" PRIu64 " n=%zu first=%u/%u *error=%s",
       (const char *) user_data, metacontext, offset, nr_entries,
       nr_entries ? entries[0] : 0, nr_entries ? entries[1] : 0,
       errname (*error));
  return 0;
}

static int
extent64_cb (void *user_data, const char *metacontext, uint64_t offset,
             nbd_extent *entries, size_t nr_entries, int *error)
{
  say ("  extents64 %s %s offset=%" PRIu64 " n=%zu first=%" PRIu64 "/%" PRIu64
       " *error=%s", (const char *) user_data, metacontext, offset,
       nr_entries, nr_entries ? entries[0].length : 0,
       nr_entries ? entries[0].flags : 0, errname (*error));
  return 0;
}

static void
free_tag (void *user_data)
{
  say ("  free %s", (const char *) user_data);
}

/* aio_opt_* callbacks may run inside the call or in the poll loop: they
 * only count. */
static int done, err = -1, freed, contexts;

static int
count_done (void *user_data, int *error)
{
  (void) user_data;
  done = 1;
  err = *error;
  return 1;
}

static int
count_ctx (void *user_data, const char *name)
{
  (void) user_data; (void) name;
  contexts++;
  return 0;
}

static void
count_free (void *user_data)
{
  (void) user_data;
  freed++;
}

#define DONE ((nbd_completion_callback) { .callback = count_done, .free = count_free })
#define CTX ((nbd_context_callback) { .callback = count_ctx, .free = count_free })

static void
opt_wait (struct nbd_handle *h, const char *what, int64_t r)
{
  int i;
  for (i = 0; i < 50 && r != -1 && !done; i++)
    if (nbd_poll (h, 1000) == -1) break;
  say ("%s: done=%d error=%s freed=%d contexts=%d", what, done, errname (err),
       freed, contexts);
  done = 0; err = -1; freed = 0; contexts = 0;
}

static void
short_state (struct nbd_handle *h, const char *when)
{
  const char *s = nbd_connection_state (h);
  size_t n = s ? strcspn (s, ":") : 0;
  say ("connection_state %s: %.*s", when, (int) n, s ? s : "NULL");
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  static char data[4096], buf[4096];
  struct cb_spec c1 = { "trim", 1, 0 }, c2 = { "zero", 1, 0 },
    c3 = { "cache", 1, 0 }, c4 = { "bs", 1, 0 }, c5 = { "bs64", 1, 0 },
    c6 = { "bsf", 1, 0 }, c7 = { "write", 1, 0 };
  int64_t c;
  char *ctx[] = { (char *) "base:allocation", NULL };

  if (argc != 4) return 2;
  memset (data, 0x77, sizeof data);
  h = nbd_create ();
  T (nbd_get_version_extra (h) != NULL);
  short_state (h, "created");
  T (nbd_connect_uri (h, "nbd+unix:///?socket=/nonexistent") == -1);
  T (nbd_get_error () != NULL);
  nbd_close (h);

  h = nbd_create ();
  T (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  T (nbd_connect_uri (h, argv[1]));
  short_state (h, "connected");

  c = T (nbd_aio_pwrite (h, data, 4096, 0, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &c7, .free = free_cb }, LIBNBD_CMD_FLAG_FUA));
  (void) wait_for (h, c); /* retired by its callback: see aio.c */
  c = T (nbd_aio_trim (h, 4096, 65536, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &c1, .free = free_cb }, 0));
  (void) wait_for (h, c); /* retired by its callback: see aio.c */
  c = T (nbd_aio_zero (h, 4096, 8192, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &c2, .free = free_cb }, LIBNBD_CMD_FLAG_NO_HOLE));
  (void) wait_for (h, c); /* retired by its callback: see aio.c */
  c = T (nbd_aio_cache (h, 4096, 0, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &c3, .free = free_cb }, 0));
  (void) wait_for (h, c); /* retired by its callback: see aio.c */
  c = T (nbd_aio_block_status (h, 65536, 0,
        (nbd_extent_callback) { .callback = extent_cb, .user_data = "e32", .free = free_tag },
        (nbd_completion_callback) { .callback = completion_cb, .user_data = &c4, .free = free_cb }, 0));
  (void) wait_for (h, c); /* retired by its callback: see aio.c */
  c = T (nbd_aio_block_status_64 (h, 65536, 0,
        (nbd_extent64_callback) { .callback = extent64_cb, .user_data = "e64", .free = free_tag },
        (nbd_completion_callback) { .callback = completion_cb, .user_data = &c5, .free = free_cb }, 0));
  (void) wait_for (h, c); /* retired by its callback: see aio.c */
  c = T (nbd_aio_block_status_filter (h, 65536, 0, ctx,
        (nbd_extent64_callback) { .callback = extent64_cb, .user_data = "ef", .free = free_tag },
        (nbd_completion_callback) { .callback = completion_cb, .user_data = &c6, .free = free_cb }, 0));
  (void) wait_for (h, c); /* retired by its callback: see aio.c */
  T (nbd_aio_block_status (h, 65536, 0,
        (nbd_extent_callback) { .callback = extent_cb, .user_data = "bad-flags", .free = free_tag },
        (nbd_completion_callback) { .callback = completion_cb, .user_data = &c4, .free = free_cb }, LIBNBD_CMD_FLAG_FUA));
  T (nbd_aio_trim (h, 0, 0, NBD_NULL_COMPLETION, 0));
  T (nbd_aio_zero (h, 4096, 1048576, NBD_NULL_COMPLETION, 0));
  T (nbd_aio_cache (h, 4096, 0, NBD_NULL_COMPLETION, LIBNBD_CMD_FLAG_FUA));
  c = T (nbd_aio_pread (h, buf, 4096, 0, NBD_NULL_COMPLETION, 0));
  T (wait_for (h, c));
  dump ("read back", buf, 16);
  T (nbd_shutdown (h, 0));
  short_state (h, "shut down");
  nbd_close (h);

  /* aio_opt_* */
  h = nbd_create ();
  T (nbd_set_opt_mode (h, true));
  T (nbd_set_request_structured_replies (h, false));
  T (nbd_set_request_extended_headers (h, false));
  T (nbd_aio_opt_structured_reply (h, DONE));
  T (nbd_connect_uri (h, argv[1]));
  short_state (h, "negotiating");
  opt_wait (h, "aio_opt_structured_reply", T (nbd_aio_opt_structured_reply (h, DONE)));
  opt_wait (h, "aio_opt_extended_headers", T (nbd_aio_opt_extended_headers (h, DONE)));
  opt_wait (h, "aio_opt_starttls", T (nbd_aio_opt_starttls (h, DONE)));
  opt_wait (h, "aio_opt_list_meta_context", T (nbd_aio_opt_list_meta_context (h, CTX, DONE)));
  opt_wait (h, "aio_opt_list_meta_context_queries", T (nbd_aio_opt_list_meta_context_queries (h, ctx, CTX, DONE)));
  opt_wait (h, "aio_opt_set_meta_context_queries", T (nbd_aio_opt_set_meta_context_queries (h, ctx, CTX, DONE)));
  T (nbd_add_meta_context (h, "base:allocation"));
  opt_wait (h, "aio_opt_set_meta_context", T (nbd_aio_opt_set_meta_context (h, CTX, DONE)));
  T (nbd_get_structured_replies_negotiated (h));
  /* NBD_OPT_ABORT ends the session once written: no reply is awaited. */
  T (nbd_aio_opt_abort (h));
  state (h, "after aio_opt_abort");
  T (nbd_aio_get_direction (h));
  T (nbd_aio_get_fd (h) >= 0 ? 0 : -1);
  for (int i = 0; i < 50 && !nbd_aio_is_closed (h) && !nbd_aio_is_dead (h); i++)
    if (nbd_poll (h, 1000) == -1) break;
  state (h, "after polling");
  nbd_close (h);

  /* aio connects of subprocesses. */
  {
    char *cmd[] = { argv[2], (char *) "nbdkit", (char *) "-s", (char *) "--exit-with-parent",
                    argv[3], (char *) "1M", NULL };
    char *sa[] = { argv[2], (char *) "nbdkit", (char *) "--exit-with-parent",
                   argv[3], (char *) "2M", NULL };
    h = nbd_create ();
    T (nbd_aio_connect_command (h, NULL));
    T (nbd_aio_connect_command (h, cmd));
    for (int i = 0; i < 100 && !nbd_aio_is_ready (h) && !nbd_aio_is_dead (h); i++)
      if (nbd_poll (h, 1000) == -1) break;
    state (h, "aio_connect_command");
    T (nbd_get_size (h));
    nbd_close (h);

    h = nbd_create ();
    T (nbd_aio_connect_systemd_socket_activation (h, sa));
    for (int i = 0; i < 100 && !nbd_aio_is_ready (h) && !nbd_aio_is_dead (h); i++)
      if (nbd_poll (h, 1000) == -1) break;
    state (h, "aio_connect_systemd_socket_activation");
    T (nbd_get_size (h));
    nbd_close (h);
  }

  /* URI tls-priority. */
  h = nbd_create ();
  T (nbd_set_uri_allow_tls_priority (h, true));
  T (nbd_set_uri_allow_tls_priority (h, false));
  T (nbd_connect_uri (h, "nbds+unix:///?socket=/nonexistent&tls-priority=NORMAL"));
  state (h, "tls-priority refused");
  nbd_close (h);
  say ("end");
  return 0;
}
