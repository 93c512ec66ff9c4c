/* Differential trace: TLS settings.  argv[1]: URI of an nbdkit memory
 * export without TLS; argv[2]: the Unix socket of one requiring TLS with
 * the pre-shared keys of argv[3] (user "alice"). */
#include "trace.h"

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;

  if (argc != 4) return 2;
  h = nbd_create ();
  T (nbd_supports_tls (h));
  T (nbd_get_tls (h));
  T (nbd_set_tls (h, 3));
  T (nbd_set_tls (h, -1));
  T (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
  T (nbd_get_tls (h));
  T (nbd_set_tls (h, LIBNBD_TLS_ALLOW));
  T (nbd_get_tls (h));
  T (nbd_get_tls_verify_peer (h));
  T (nbd_set_tls_verify_peer (h, false));
  T (nbd_get_tls_verify_peer (h));
  TS (nbd_get_tls_username (h));
  T (nbd_set_tls_username (h, "alice"));
  TS (nbd_get_tls_username (h));
  T (nbd_set_tls_username (h, NULL));
  TS (nbd_get_tls_hostname (h));
  T (nbd_set_tls_hostname (h, "example.com"));
  TS (nbd_get_tls_hostname (h));
  T (nbd_set_tls_hostname (h, NULL));
  TS (nbd_get_tls_priority (h));
  T (nbd_set_tls_priority (h, "NORMAL"));
  TS (nbd_get_tls_priority (h));
  T (nbd_set_tls_priority (h, NULL));
  T (nbd_set_tls_certificates (h, "/nonexistent"));
  T (nbd_set_tls_certificates (h, NULL));
  T (nbd_set_tls_psk_file (h, "/nonexistent"));
  T (nbd_set_tls_psk_file (h, NULL));
  T (nbd_get_tls_negotiated (h));
  T (nbd_opt_starttls (h));
  /* TLS allowed but not offered: a plain connection. */
  T (nbd_set_tls_psk_file (h, "/nonexistent"));
  T (nbd_connect_uri (h, argv[1]));
  state (h, "after connect");
  T (nbd_get_tls_negotiated (h));
  T (nbd_set_tls (h, LIBNBD_TLS_DISABLE));
  T (nbd_set_tls_verify_peer (h, true));
  T (nbd_set_tls_username (h, "bob"));
  T (nbd_set_tls_hostname (h, "x"));
  T (nbd_set_tls_priority (h, "NORMAL"));
  T (nbd_set_tls_certificates (h, "/x"));
  T (nbd_set_tls_psk_file (h, "/x"));
  nbd_close (h);

  /* TLS required, server without TLS. */
  h = nbd_create ();
  T (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
  T (nbd_connect_uri (h, argv[1]));
  state (h, "after connect requiring TLS");
  nbd_close (h);

  /* opt_starttls against a server without TLS, in opt mode. */
  h = nbd_create ();
  T (nbd_set_tls (h, LIBNBD_TLS_ALLOW));
  T (nbd_set_opt_mode (h, true));
  T (nbd_connect_uri (h, argv[1]));
  T (nbd_opt_starttls (h));
  T (nbd_get_tls_negotiated (h));
  T (nbd_opt_go (h));
  T (nbd_get_tls_negotiated (h));
  nbd_close (h);
  /* A server requiring TLS (PSK). */
  h = nbd_create ();
  T (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
  T (nbd_set_tls_psk_file (h, argv[3]));
  T (nbd_set_tls_username (h, "alice"));
  T (nbd_connect_unix (h, argv[2]));
  state (h, "PSK alice");
  T (nbd_get_tls_negotiated (h));
  T (nbd_pread (h, (char[512]){0}, 512, 0, 0));
  T (nbd_shutdown (h, 0));
  nbd_close (h);

  h = nbd_create ();
  T (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
  T (nbd_set_tls_psk_file (h, argv[3]));
  T (nbd_set_tls_username (h, "mallory"));
  T (nbd_connect_unix (h, argv[2]));
  state (h, "PSK unknown user");
  nbd_close (h);

  /* The right user with the wrong key: the handshake fails (errno 0). */
  {
    char wrong[] = "/tmp/diff-tls-XXXXXX";
    int fd = mkstemp (wrong);
    if (fd == -1) return 1;
    if (dprintf (fd, "alice:%064d\n", 0) < 0) return 1;
    close (fd);
    h = nbd_create ();
    T (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
    T (nbd_set_tls_psk_file (h, wrong));
    T (nbd_set_tls_username (h, "alice"));
    T (nbd_connect_unix (h, argv[2]));
    state (h, "PSK wrong key");
    nbd_close (h);
    unlink (wrong);
  }

  /* A PSK file that does not exist, the username set. */
  h = nbd_create ();
  T (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
  T (nbd_set_tls_psk_file (h, "/nonexistent/keys.psk"));
  T (nbd_set_tls_username (h, "alice"));
  T (nbd_connect_unix (h, argv[2]));
  state (h, "PSK file missing");
  nbd_close (h);

  h = nbd_create ();
  T (nbd_set_tls (h, LIBNBD_TLS_DISABLE));
  T (nbd_connect_unix (h, argv[2]) == -1);
  state (h, "TLS disabled against a TLS-only server");
  nbd_close (h);

  h = nbd_create ();
  T (nbd_set_tls (h, LIBNBD_TLS_ALLOW));
  T (nbd_set_tls_psk_file (h, argv[3]));
  T (nbd_set_tls_username (h, "alice"));
  T (nbd_set_opt_mode (h, true));
  T (nbd_connect_unix (h, argv[2]));
  T (nbd_get_tls_negotiated (h));
  T (nbd_opt_starttls (h));
  T (nbd_get_tls_negotiated (h));
  T (nbd_opt_starttls (h));
  T (nbd_opt_go (h));
  T (nbd_get_tls_negotiated (h));
  nbd_close (h);

  h = nbd_create ();
  T (nbd_set_tls_psk_file (h, "/nonexistent/keys.psk"));
  T (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
  T (nbd_connect_unix (h, argv[2]));
  state (h, "missing PSK file");
  nbd_close (h);

  /* Priority strings. */
  h = nbd_create ();
  T (nbd_set_tls_priority (h, "NORMAL:-VERS-ALL:+VERS-TLS1.3"));
  TS (nbd_get_tls_priority (h));
  T (nbd_set_tls_priority (h, "BOGUS-PRIORITY"));
  TS (nbd_get_tls_priority (h));
  nbd_close (h);
  say ("end");
  return 0;
}
