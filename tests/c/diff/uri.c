/* Differential trace: URIs.  argv[1]: the Unix socket of an nbdkit memory
 * export; argv[2]: a TCP port on 127.0.0.1 of another. */
#include "trace.h"

static void
try_uri (const char *uri)
{
  struct nbd_handle *h = nbd_create ();
  if (strlen (uri) > 200)
    say ("uri of %zu bytes", strlen (uri));
  else
    say ("uri %s", uri);
  T (nbd_is_uri (h, uri));
  T (nbd_connect_uri (h, uri));
  state (h, "after");
  nbd_close (h);
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  char uri[8192], *u;
  int i;
  static char longname[5200];

  if (argc != 3) return 2;
  h = nbd_create ();
  T (nbd_supports_uri (h));
  T (nbd_is_uri (h, NULL));
  T (nbd_set_uri_allow_transports (h, 0x100));
  T (nbd_set_uri_allow_transports (h, LIBNBD_ALLOW_TRANSPORT_UNIX));
  T (nbd_set_uri_allow_tls (h, 5));
  T (nbd_set_uri_allow_tls (h, LIBNBD_TLS_DISABLE));
  T (nbd_set_uri_allow_local_file (h, true));
  T (nbd_connect_uri (h, NULL));
  snprintf (uri, sizeof uri, "nbd://127.0.0.1:%s/", argv[2]);
  T (nbd_connect_uri (h, uri));
  state (h, "after refused transport");
  nbd_close (h);

  {
    const char *strings[] = {
      "nbd://localhost", "nbds://localhost/x", "nbd+unix:///?socket=/x",
      "nbd+vsock://1", "nbd+ssh://host/", "http://x", "nbd:", "", "not a uri",
      "NBD://localhost", "nbd+unix://", "nbd://[::1]:10809/e",
      "nbd://h/%41%42", "nbd://h/?tls-certificates=/x",
    };
    h = nbd_create ();
    for (i = 0; i < (int) (sizeof strings / sizeof strings[0]); i++) {
      say ("is_uri \"%s\"", strings[i]);
      T (nbd_is_uri (h, strings[i]));
    }
    nbd_close (h);
  }

  /* Bad URIs fail before connecting. */
  try_uri ("http://x/");
  try_uri ("nbd+unix:///");
  try_uri ("nbd+unix:///?socket=");
  try_uri ("nbd://127.0.0.1:99999/");
  try_uri ("nbd+unix:///?socket=/nonexistent/socket");
  try_uri ("nbd+unix:///?socket=/x&unknown=1");
  try_uri ("nbd+unix:///?socket=/x&socket=/y");
  try_uri ("nbds+unix:///?socket=/x&tls-psk-file=/etc/passwd");
  try_uri ("nbd+unix:///?socket=/x&tls-certificates=/etc");
  try_uri ("nbd://%zz/");

  /* Export names of 3000 bytes, and longer than NBD allows (4096). */
  memset (longname, 'a', 5000);
  snprintf (uri, sizeof uri, "nbd+unix:///%.3000s?socket=%s", longname, argv[1]);
  try_uri (uri);
  snprintf (uri, sizeof uri, "nbd+unix:///%.5000s?socket=%s", longname, argv[1]);
  try_uri (uri);
  {
    struct nbd_handle *h2 = nbd_create ();
    T (nbd_set_export_name (h2, longname));
    nbd_close (h2);
  }

  /* Connected: nbd_get_uri. */
  h = nbd_create ();
  TS (nbd_get_uri (h));
  snprintf (uri, sizeof uri, "nbd+unix:///?socket=%s", argv[1]);
  T (nbd_connect_uri (h, uri));
  u = nbd_get_uri (h);
  say ("get_uri matches: %d", u && strcmp (u, uri) == 0);
  free (u);
  TS (nbd_get_export_name (h));
  nbd_close (h);

  h = nbd_create ();
  T (nbd_connect_unix (h, argv[1]));
  u = nbd_get_uri (h);
  say ("get_uri after connect_unix matches: %d", u && strcmp (u, uri) == 0);
  free (u);
  nbd_close (h);

  h = nbd_create ();
  snprintf (uri, sizeof uri, "nbd://127.0.0.1:%s/", argv[2]);
  T (nbd_connect_uri (h, uri));
  u = nbd_get_uri (h);
  say ("get_uri after TCP matches: %d", u && strcmp (u, uri) == 0);
  free (u);
  nbd_close (h);

  h = nbd_create ();
  T (nbd_set_opt_mode (h, true));
  snprintf (uri, sizeof uri, "nbd+unix:///exp%%2fx?socket=%s", argv[1]);
  T (nbd_connect_uri (h, uri));
  TS (nbd_get_export_name (h));
  T (nbd_aio_is_negotiating (h));
  nbd_close (h);
  say ("end");
  return 0;
}
