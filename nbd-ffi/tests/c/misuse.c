/* Exercises libnbd.so.0 (nbd-rs) from C the way careless programs do:
 * NULL handles and strings, calls in the wrong state, oversized names, bad
 * flags; and checks the settings, debug and callback-lifetime rules that do
 * not need a server.
 *
 * Usage: misuse EXPECTED_VERSION     run all checks, print "N passed, M failed"
 *        misuse --stderr-debug       emit a few debug messages on stderr
 */

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

static int passed, failed;

#define CHECK(cond) check ((cond), #cond, __LINE__)

static void
check (int ok, const char *what, int line)
{
  if (ok)
    passed++;
  else {
    failed++;
    fprintf (stderr, "FAIL line %d: %s (errno %d, error \"%s\")\n",
             line, what, nbd_get_errno (),
             nbd_get_error () ? nbd_get_error () : "(null)");
  }
}

/* The last error has errno ERR and a message that starts "FN: ". */
static int
last_error_is (int err, const char *fn)
{
  const char *msg = nbd_get_error ();
  size_t n = strlen (fn);
  if (nbd_get_errno () != err || msg == NULL)
    return 0;
  return strncmp (msg, fn, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ';
}

#define EXPECT_ERR(call, failure, err)                                  \
  do {                                                                  \
    CHECK ((call) == (failure));                                        \
    CHECK (last_error_is ((err), fn_name (#call)));                     \
  } while (0)

/* "nbd_foo (h, ...)" -> "nbd_foo" */
static const char *
fn_name (const char *call)
{
  static char buf[128];
  size_t n = strcspn (call, " (");
  if (n >= sizeof buf)
    n = sizeof buf - 1;
  memcpy (buf, call, n);
  buf[n] = '\0';
  return buf;
}

/* ----- callback bookkeeping ----- */

struct tracker {
  int calls;          /* times .callback ran */
  int frees;          /* times .free ran */
  int order;          /* global sequence number of the free */
  char last_context[64];
  char last_msg[256];
};

static int free_sequence;

static void
tracker_free (void *user_data)
{
  struct tracker *t = user_data;
  t->frees++;
  t->order = ++free_sequence;
}

static int
debug_cb (void *user_data, const char *context, const char *msg)
{
  struct tracker *t = user_data;
  t->calls++;
  snprintf (t->last_context, sizeof t->last_context, "%s", context);
  snprintf (t->last_msg, sizeof t->last_msg, "%s", msg);
  return 0;
}

static nbd_completion_callback
completion (struct tracker *t)
{
  nbd_completion_callback c = { NULL, t, tracker_free };
  return c;
}

static char *
repeat (char c, size_t n)
{
  char *s = malloc (n + 1);
  if (s == NULL)
    abort ();
  memset (s, c, n);
  s[n] = '\0';
  return s;
}

/* Compares a malloc'd result with EXPECTED and frees it. */
static int
str_is (char *got, const char *expected)
{
  int ok = got != NULL && strcmp (got, expected) == 0;
  free (got);
  return ok;
}

/* ----- the checks ----- */

static void
null_handle (void)
{
  struct tracker t = { 0 };
  char buf[16];

  EXPECT_ERR (nbd_set_export_name (NULL, "x"), -1, EFAULT);
  EXPECT_ERR (nbd_get_export_name (NULL), NULL, EFAULT);
  EXPECT_ERR (nbd_get_size (NULL), -1, EFAULT);
  EXPECT_ERR (nbd_connection_state (NULL), NULL, EFAULT);
  EXPECT_ERR (nbd_get_version (NULL), NULL, EFAULT);
  EXPECT_ERR (nbd_aio_is_created (NULL), -1, EFAULT);
  EXPECT_ERR (nbd_get_handshake_flags (NULL), 0, EFAULT);
  EXPECT_ERR (nbd_get_private_data (NULL), 0, EFAULT);
  EXPECT_ERR (nbd_get_nr_meta_contexts (NULL), -1, EFAULT);
  EXPECT_ERR (nbd_connect_uri (NULL, "nbd://localhost/"), -1, EFAULT);

  /* Callbacks are released even when the handle is missing. */
  EXPECT_ERR (nbd_aio_pread (NULL, buf, sizeof buf, 0, completion (&t), 0),
              -1, EFAULT);
  CHECK (t.frees == 1);
  {
    nbd_debug_callback d = { debug_cb, &t, tracker_free };
    EXPECT_ERR (nbd_set_debug_callback (NULL, d), -1, EFAULT);
    CHECK (t.frees == 2);
    CHECK (t.calls == 0);
  }

  nbd_close (NULL);            /* allowed, does nothing */
  CHECK (1);
}

static void
null_strings (struct nbd_handle *h)
{
  char *argv_empty[] = { NULL };

  EXPECT_ERR (nbd_set_export_name (h, NULL), -1, EFAULT);
  EXPECT_ERR (nbd_set_handle_name (h, NULL), -1, EFAULT);
  EXPECT_ERR (nbd_add_meta_context (h, NULL), -1, EFAULT);
  EXPECT_ERR (nbd_set_tls_certificates (h, NULL), -1, EFAULT);
  EXPECT_ERR (nbd_set_tls_username (h, NULL), -1, EFAULT);
  EXPECT_ERR (nbd_set_tls_psk_file (h, NULL), -1, EFAULT);
  EXPECT_ERR (nbd_connect_uri (h, NULL), -1, EFAULT);
  EXPECT_ERR (nbd_connect_unix (h, NULL), -1, EFAULT);
  EXPECT_ERR (nbd_connect_tcp (h, "localhost", NULL), -1, EFAULT);
  EXPECT_ERR (nbd_connect_command (h, NULL), -1, EFAULT);
  EXPECT_ERR (nbd_connect_command (h, argv_empty), -1, EINVAL);
  EXPECT_ERR (nbd_aio_connect (h, NULL, 0), -1, EFAULT);
  /* The state check comes first, as in libnbd. */
  EXPECT_ERR (nbd_can_meta_context (h, NULL), -1, ENOTCONN);
  CHECK (nbd_aio_is_created (h) == 1);
}

static void
wrong_state (struct nbd_handle *h)
{
  char buf[16];

  EXPECT_ERR (nbd_get_size (h), -1, ENOTCONN);
  EXPECT_ERR (nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM), -1, ENOTCONN);
  EXPECT_ERR (nbd_is_read_only (h), -1, ENOTCONN);
  EXPECT_ERR (nbd_can_flush (h), -1, ENOTCONN);
  EXPECT_ERR (nbd_get_protocol (h), NULL, ENOTCONN);
  EXPECT_ERR (nbd_get_canonical_export_name (h), NULL, ENOTCONN);
  EXPECT_ERR (nbd_get_export_description (h), NULL, ENOTCONN);
  EXPECT_ERR (nbd_get_tls_negotiated (h), -1, ENOTCONN);
  EXPECT_ERR (nbd_get_structured_replies_negotiated (h), -1, ENOTCONN);
  EXPECT_ERR (nbd_get_uri (h), NULL, ENOTCONN);
  EXPECT_ERR (nbd_aio_in_flight (h), -1, ENOTCONN);
  EXPECT_ERR (nbd_opt_go (h), -1, ENOTCONN);
  EXPECT_ERR (nbd_opt_abort (h), -1, ENOTCONN);
  EXPECT_ERR (nbd_shutdown (h, 0), -1, ENOTCONN);
  EXPECT_ERR (nbd_flush (h, 0), -1, ENOTCONN);
  EXPECT_ERR (nbd_pwrite (h, buf, sizeof buf, 0, 0), -1, ENOTCONN);
  CHECK (strstr (nbd_get_error (), "invalid state") != NULL);
  EXPECT_ERR (nbd_aio_flush (h, NBD_NULL_COMPLETION, 0), -1, ENOTCONN);
}

static void
oversize_and_bad_values (struct nbd_handle *h)
{
  char *max = repeat ('a', 4096);
  char *over = repeat ('b', 4097);

  EXPECT_ERR (nbd_set_export_name (h, over), -1, ENAMETOOLONG);
  CHECK (nbd_set_export_name (h, max) == 0);
  CHECK (str_is (nbd_get_export_name (h), max));
  EXPECT_ERR (nbd_add_meta_context (h, over), -1, ENAMETOOLONG);
  CHECK (nbd_get_nr_meta_contexts (h) == 0);
  /* Handle names are not sent to the server: no limit. */
  CHECK (nbd_set_handle_name (h, over) == 0);
  CHECK (str_is (nbd_get_handle_name (h), over));
  CHECK (nbd_set_export_name (h, "") == 0);

  EXPECT_ERR (nbd_set_tls (h, 3), -1, EINVAL);
  EXPECT_ERR (nbd_set_tls (h, -1), -1, EINVAL);
  CHECK (nbd_set_tls (h, LIBNBD_TLS_ALLOW) == 0);
  CHECK (nbd_get_tls (h) == LIBNBD_TLS_ALLOW);
  CHECK (nbd_set_tls (h, LIBNBD_TLS_REQUIRE) == 0);
  CHECK (nbd_get_tls (h) == LIBNBD_TLS_REQUIRE);
  CHECK (nbd_set_tls (h, LIBNBD_TLS_DISABLE) == 0);
  CHECK (nbd_get_tls (h) == LIBNBD_TLS_DISABLE);
  EXPECT_ERR (nbd_set_handshake_flags (h, LIBNBD_HANDSHAKE_FLAG_MASK + 1), -1, EINVAL);
  EXPECT_ERR (nbd_set_strict_mode (h, LIBNBD_STRICT_MASK + 1), -1, EINVAL);
  EXPECT_ERR (nbd_set_uri_allow_transports (h, LIBNBD_ALLOW_TRANSPORT_MASK + 1), -1, EINVAL);
  EXPECT_ERR (nbd_set_uri_allow_tls (h, 3), -1, EINVAL);
  EXPECT_ERR (nbd_get_meta_context (h, 0), NULL, EINVAL);

  free (max);
  free (over);
}

static void
defaults (const char *version)
{
  struct nbd_handle *a, *b;
  char *na, *nb;
  const char *state;

  unsetenv ("LIBNBD_DEBUG");
  a = nbd_create ();
  b = nbd_create ();
  CHECK (a != NULL && b != NULL);
  na = nbd_get_handle_name (a);
  nb = nbd_get_handle_name (b);
  CHECK (na != NULL && strncmp (na, "nbd", 3) == 0);
  CHECK (nb != NULL && strncmp (nb, "nbd", 3) == 0);
  if (na && nb)
    CHECK (atoi (nb + 3) == atoi (na + 3) + 1);
  free (na);
  free (nb);

  CHECK (nbd_get_debug (a) == 0);
  CHECK (nbd_get_request_structured_replies (a) == 1);
  CHECK (nbd_get_full_info (a) == 0);
  CHECK (nbd_get_request_block_size (a) == 1);
  CHECK (nbd_get_handshake_flags (a) == LIBNBD_HANDSHAKE_FLAG_MASK);
  CHECK (nbd_get_strict_mode (a) == LIBNBD_STRICT_MASK);
  CHECK (nbd_get_pread_initialize (a) == 1);
  CHECK (nbd_get_opt_mode (a) == 0);
  CHECK (nbd_get_tls (a) == LIBNBD_TLS_DISABLE);
  CHECK (nbd_get_tls_verify_peer (a) == 1);
  CHECK (nbd_supports_tls (a) == 1);
  CHECK (nbd_supports_uri (a) == 1);
  CHECK (nbd_get_nr_meta_contexts (a) == 0);
  CHECK (nbd_get_private_data (a) == 0);
  CHECK (str_is (nbd_get_export_name (a), ""));
  /* As libnbd: the package is "libnbd", the version the libnbd release
   * whose API is implemented; our own name is in the extra version. */
  CHECK (strcmp (nbd_get_package_name (a), "libnbd") == 0);
  CHECK (strcmp (nbd_get_version (a), version) == 0);
  CHECK (strncmp (nbd_get_version_extra (a), "nbd-rs ", 7) == 0);
  CHECK (nbd_aio_is_created (a) == 1);
  CHECK (nbd_aio_is_connecting (a) == 0);
  CHECK (nbd_aio_is_negotiating (a) == 0);
  CHECK (nbd_aio_is_ready (a) == 0);
  CHECK (nbd_aio_is_processing (a) == 0);
  CHECK (nbd_aio_is_dead (a) == 0);
  CHECK (nbd_aio_is_closed (a) == 0);
  CHECK (nbd_aio_get_direction (a) == 0);
  state = nbd_connection_state (a);
  CHECK (state != NULL && strncmp (state, "START", 5) == 0);

  setenv ("LOGNAME", "tester", 1);
  CHECK (str_is (nbd_get_tls_username (a), "tester"));
  nbd_close (a);
  nbd_close (b);

  setenv ("LIBNBD_DEBUG", "1", 1);
  a = nbd_create ();
  CHECK (nbd_get_debug (a) == 1);
  {
    /* No function and no free: no callback at all, refused. A free
     * function alone is a callback (messages then go to stderr). */
    struct tracker t = { 0 };
    nbd_debug_callback none = { NULL, NULL, NULL };
    nbd_debug_callback free_only = { NULL, &t, tracker_free };
    EXPECT_ERR (nbd_set_debug_callback (a, none), -1, EFAULT);
    CHECK (nbd_set_debug_callback (a, free_only) == 0);
    nbd_close (a);
    CHECK (t.frees == 1 && t.calls == 0);
  }
  setenv ("LIBNBD_DEBUG", "yes", 1);   /* only exactly "1" enables it */
  a = nbd_create ();
  CHECK (nbd_get_debug (a) == 0);
  nbd_close (a);
  unsetenv ("LIBNBD_DEBUG");
}

static void
settings_round_trip (struct nbd_handle *h)
{
  CHECK (nbd_set_private_data (h, 42) == 0);
  CHECK (nbd_get_private_data (h) == 42);
  CHECK (nbd_set_private_data (h, (uintptr_t) h) == 42);
  CHECK (nbd_get_private_data (h) == (uintptr_t) h);

  CHECK (nbd_set_handle_name (h, "mine") == 0);
  CHECK (str_is (nbd_get_handle_name (h), "mine"));
  CHECK (nbd_set_export_name (h, "disk") == 0);
  CHECK (str_is (nbd_get_export_name (h), "disk"));

  CHECK (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0);
  CHECK (nbd_add_meta_context (h, "qemu:dirty-bitmap:b") == 0);
  CHECK (nbd_get_nr_meta_contexts (h) == 2);
  CHECK (str_is (nbd_get_meta_context (h, 0), "base:allocation"));
  CHECK (str_is (nbd_get_meta_context (h, 1), "qemu:dirty-bitmap:b"));
  EXPECT_ERR (nbd_get_meta_context (h, 2), NULL, EINVAL);
  CHECK (nbd_clear_meta_contexts (h) == 0);
  CHECK (nbd_get_nr_meta_contexts (h) == 0);

  CHECK (nbd_set_request_structured_replies (h, false) == 0);
  CHECK (nbd_get_request_structured_replies (h) == 0);
  CHECK (nbd_set_full_info (h, true) == 0);
  CHECK (nbd_get_full_info (h) == 1);
  CHECK (nbd_set_request_block_size (h, false) == 0);
  CHECK (nbd_get_request_block_size (h) == 0);
  CHECK (nbd_set_handshake_flags (h, LIBNBD_HANDSHAKE_FLAG_NO_ZEROES) == 0);
  CHECK (nbd_get_handshake_flags (h) == LIBNBD_HANDSHAKE_FLAG_NO_ZEROES);
  CHECK (nbd_set_strict_mode (h, LIBNBD_STRICT_BOUNDS) == 0);
  CHECK (nbd_get_strict_mode (h) == LIBNBD_STRICT_BOUNDS);
  CHECK (nbd_set_opt_mode (h, true) == 0);
  CHECK (nbd_get_opt_mode (h) == 1);
  CHECK (nbd_set_tls_verify_peer (h, false) == 0);
  CHECK (nbd_get_tls_verify_peer (h) == 0);
  CHECK (nbd_set_tls_username (h, "alice") == 0);
  CHECK (str_is (nbd_get_tls_username (h), "alice"));
  CHECK (nbd_set_tls_certificates (h, "/etc/pki/x") == 0);
  CHECK (nbd_set_tls_psk_file (h, "/k.psk") == 0);
  CHECK (nbd_set_uri_allow_transports (h, LIBNBD_ALLOW_TRANSPORT_UNIX) == 0);
  CHECK (nbd_set_uri_allow_tls (h, LIBNBD_TLS_DISABLE) == 0);
  CHECK (nbd_set_uri_allow_local_file (h, true) == 0);
  CHECK (nbd_set_debug (h, true) == 0);
  CHECK (nbd_get_debug (h) == 1);
  CHECK (nbd_set_debug (h, false) == 0);
}

static void
uris (void)
{
  struct nbd_handle *h = nbd_create ();

  EXPECT_ERR (nbd_connect_uri (h, "http://example.com/"), -1, EINVAL);
  EXPECT_ERR (nbd_connect_uri (h, "nbd+unix:///disk"), -1, EINVAL);
  EXPECT_ERR (nbd_connect_uri (h, "nbd://h/?tls-psk-file=/k"), -1, EPERM);
  CHECK (nbd_set_uri_allow_tls (h, LIBNBD_TLS_DISABLE) == 0);
  EXPECT_ERR (nbd_connect_uri (h, "nbds://h/"), -1, EPERM);
  CHECK (nbd_set_uri_allow_tls (h, LIBNBD_TLS_REQUIRE) == 0);
  EXPECT_ERR (nbd_connect_uri (h, "nbd://h/"), -1, EPERM);
  CHECK (nbd_set_uri_allow_tls (h, LIBNBD_TLS_ALLOW) == 0);
  CHECK (nbd_set_uri_allow_transports (h, LIBNBD_ALLOW_TRANSPORT_UNIX) == 0);
  EXPECT_ERR (nbd_connect_uri (h, "nbd://localhost/"), -1, EPERM);
  CHECK (nbd_aio_is_created (h) == 1);
  /* A connect that fails leaves the handle dead, and it cannot connect again. */
  EXPECT_ERR (nbd_connect_uri (h, "nbd+unix:///?socket=/nonexistent/dir/sock"), -1, ENOENT);
  CHECK (strstr (nbd_get_error (), "No such file or directory") != NULL);
  CHECK (nbd_aio_is_dead (h) == 1);
  EXPECT_ERR (nbd_connect_unix (h, "/tmp/sock"), -1, EINVAL);
  nbd_close (h);
}

static void
debug_callbacks (void)
{
  struct nbd_handle *h = nbd_create ();
  struct tracker first = { 0 }, second = { 0 };
  nbd_debug_callback cb1 = { debug_cb, &first, tracker_free };
  nbd_debug_callback cb2 = { debug_cb, &second, tracker_free };

  CHECK (nbd_set_debug_callback (h, cb1) == 0);
  CHECK (first.calls == 0);          /* debugging is still off */
  CHECK (nbd_set_debug (h, true) == 0);
  CHECK (first.calls >= 1);
  first.calls = 0;
  CHECK (nbd_set_export_name (h, "e") == 0);
  CHECK (first.calls == 2);          /* enter and leave */
  CHECK (strcmp (first.last_context, "nbd_set_export_name") == 0);
  CHECK (strncmp (first.last_msg, "leave: ret=0", 12) == 0);
  EXPECT_ERR (nbd_set_tls (h, 3), -1, EINVAL);
  CHECK (strncmp (first.last_msg, "leave: error=\"nbd_set_tls: ", 27) == 0);

  /* Replacing frees the old callback once; the new one gets messages. */
  CHECK (nbd_set_debug_callback (h, cb2) == 0);
  CHECK (first.frees == 1 && second.frees == 0);
  second.calls = 0;
  CHECK (nbd_get_debug (h) == 1);
  CHECK (second.calls == 2);

  CHECK (nbd_clear_debug_callback (h) == 0);
  CHECK (second.frees == 1);
  CHECK (nbd_clear_debug_callback (h) == 0);
  CHECK (second.frees == 1);
  CHECK (first.frees == 1);
  CHECK (nbd_set_debug (h, false) == 0);

  /* A callback still set at close is freed by nbd_close, once. */
  CHECK (nbd_set_debug_callback (h, cb1) == 0);
  nbd_close (h);
  CHECK (first.frees == 2);
}

static void
stub_callbacks (struct nbd_handle *h)
{
  char buf[64];
  struct tracker done = { 0 }, mid = { 0 };
  nbd_chunk_callback chunk = { NULL, &mid, tracker_free };
  nbd_extent_callback extent = { NULL, &mid, tracker_free };
  nbd_list_callback list = { NULL, &mid, tracker_free };
  nbd_context_callback context = { NULL, &mid, tracker_free };

  EXPECT_ERR (nbd_aio_pread (h, buf, sizeof buf, 0, completion (&done), 0), -1, ENOTCONN);
  CHECK (done.frees == 1);

  /* Mid-command callback freed before the completion callback. */
  EXPECT_ERR (nbd_aio_pread_structured (h, buf, sizeof buf, 0, chunk, completion (&done), 0),
              -1, ENOTCONN);
  CHECK (mid.frees == 1 && done.frees == 2 && mid.order < done.order);
  EXPECT_ERR (nbd_aio_block_status (h, 512, 0, extent, completion (&done), 0), -1, ENOTCONN);
  CHECK (mid.frees == 2 && done.frees == 3 && mid.order < done.order);
  EXPECT_ERR (nbd_aio_opt_list (h, list, completion (&done)), -1, ENOTCONN);
  CHECK (mid.frees == 3 && done.frees == 4 && mid.order < done.order);
  EXPECT_ERR (nbd_aio_opt_list_meta_context (h, context, completion (&done)), -1, ENOTCONN);
  CHECK (mid.frees == 4 && done.frees == 5);

  EXPECT_ERR (nbd_pread_structured (h, buf, sizeof buf, 0, chunk, 0), -1, ENOTCONN);
  EXPECT_ERR (nbd_block_status (h, 512, 0, extent, 0), -1, ENOTCONN);
  EXPECT_ERR (nbd_opt_list (h, list), -1, ENOTCONN);
  EXPECT_ERR (nbd_opt_list_meta_context (h, context), -1, ENOTCONN);
  CHECK (mid.frees == 8);

  EXPECT_ERR (nbd_aio_opt_go (h, completion (&done)), -1, ENOTCONN);
  EXPECT_ERR (nbd_aio_opt_info (h, completion (&done)), -1, ENOTCONN);
  EXPECT_ERR (nbd_aio_pwrite (h, buf, sizeof buf, 0, completion (&done), 0), -1, ENOTCONN);
  EXPECT_ERR (nbd_aio_trim (h, 1, 0, completion (&done), 0), -1, ENOTCONN);
  EXPECT_ERR (nbd_aio_zero (h, 1, 0, completion (&done), 0), -1, ENOTCONN);
  EXPECT_ERR (nbd_aio_cache (h, 1, 0, completion (&done), 0), -1, ENOTCONN);
  EXPECT_ERR (nbd_aio_flush (h, completion (&done), 0), -1, ENOTCONN);
  CHECK (done.frees == 12);
  CHECK (mid.calls == 0 && done.calls == 0);
}

static void
pread_initialize (struct nbd_handle *h)
{
  char buf[32];
  size_t i;
  int zero = 1, untouched = 1;

  memset (buf, 0xaa, sizeof buf);
  EXPECT_ERR (nbd_pread (h, buf, sizeof buf, 0, 0), -1, ENOTCONN);
  for (i = 0; i < sizeof buf; i++)
    zero &= buf[i] == 0;
  CHECK (zero);                 /* zeroed even though the call failed */

  CHECK (nbd_set_pread_initialize (h, false) == 0);
  memset (buf, 0xaa, sizeof buf);
  EXPECT_ERR (nbd_pread (h, buf, sizeof buf, 0, 0), -1, ENOTCONN);
  for (i = 0; i < sizeof buf; i++)
    untouched &= (unsigned char) buf[i] == 0xaa;
  CHECK (untouched);
  CHECK (nbd_set_pread_initialize (h, true) == 0);
  EXPECT_ERR (nbd_pread (h, NULL, 8, 0, 0), -1, ENOTCONN);
}

static void *
other_thread (void *arg)
{
  struct nbd_handle *h = arg;
  int *result = malloc (2 * sizeof (int));
  if (result == NULL)
    abort ();
  result[0] = nbd_set_tls (h, 3);
  result[1] = nbd_get_errno ();
  return result;
}

static void
errors_are_per_thread (struct nbd_handle *h)
{
  pthread_t t;
  int *result;

  EXPECT_ERR (nbd_set_export_name (h, NULL), -1, EFAULT);
  CHECK (pthread_create (&t, NULL, other_thread, h) == 0);
  CHECK (pthread_join (t, (void **) &result) == 0);
  CHECK (result[0] == -1 && result[1] == EINVAL);
  free (result);
  /* This thread's last error is unchanged, and so is it after a success. */
  CHECK (last_error_is (EFAULT, "nbd_set_export_name"));
  CHECK (nbd_set_export_name (h, "ok") == 0);
  CHECK (last_error_is (EFAULT, "nbd_set_export_name"));
}

static int
stderr_debug (void)
{
  struct nbd_handle *h = nbd_create ();
  if (h == NULL)
    return 1;
  nbd_set_handle_name (h, "probe");
  nbd_set_debug (h, true);
  nbd_set_export_name (h, "x\n");
  nbd_close (h);
  return 0;
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;

  if (argc == 2 && strcmp (argv[1], "--stderr-debug") == 0)
    return stderr_debug ();
  if (argc != 2) {
    fprintf (stderr, "usage: %s EXPECTED_VERSION | --stderr-debug\n", argv[0]);
    return 2;
  }

  unsetenv ("LIBNBD_DEBUG");
  CHECK (nbd_get_error () == NULL);   /* no call has failed yet */
  CHECK (nbd_get_errno () == 0);

  null_handle ();
  defaults (argv[1]);

  h = nbd_create ();
  null_strings (h);
  wrong_state (h);
  oversize_and_bad_values (h);
  stub_callbacks (h);
  pread_initialize (h);
  errors_are_per_thread (h);
  settings_round_trip (h);
  nbd_close (h);

  uris ();
  debug_callbacks ();

  printf ("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
