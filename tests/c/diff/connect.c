/* Differential trace: connect calls and transports.  argv[1]: Unix
 * socket of an nbdkit memory export; argv[2]: its TCP port on 127.0.0.1;
 * argv[3]: a closed TCP port. */
#include "trace.h"
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct sockaddr_in sin = { .sin_family = AF_INET };
  int fd;

  if (argc != 4) return 2;
  snprintf (sun.sun_path, sizeof sun.sun_path, "%s", argv[1]);

  h = nbd_create ();
  T (nbd_connect_unix (h, NULL));
  T (nbd_connect_tcp (h, NULL, "1"));
  T (nbd_connect_tcp (h, "127.0.0.1", NULL));
  T (nbd_connect_socket (h, -1));
  state (h, "after bad arguments");
  T (nbd_connect_unix (h, "/nonexistent/socket"));
  state (h, "after missing socket");
  T (nbd_connect_unix (h, argv[1]));
  nbd_close (h);

  h = nbd_create ();
  T (nbd_connect_unix (h, argv[1]));
  state (h, "unix");
  T (nbd_connect_unix (h, argv[1]));
  T (nbd_connect_tcp (h, "127.0.0.1", argv[2]));
  T (nbd_aio_connect_unix (h, argv[1]));
  nbd_close (h);

  h = nbd_create ();
  T (nbd_connect_tcp (h, "127.0.0.1", argv[2]));
  state (h, "tcp");
  T (nbd_get_size (h));
  nbd_close (h);

  /* A failed TCP connect leaves the handle newly created: the next
   * connect works. */
  h = nbd_create ();
  T (nbd_connect_tcp (h, "127.0.0.1", argv[3]));
  state (h, "refused");
  T (nbd_connect_tcp (h, "127.0.0.1", argv[2]));
  state (h, "connected after refused");
  nbd_close (h);

  h = nbd_create ();
  T (nbd_connect_tcp (h, "127.0.0.1", "no-such-service-name"));
  state (h, "bad service");
  T (nbd_aio_connect_tcp (h, "127.0.0.1", "no-such-service-name"));
  T (nbd_aio_connect_tcp (h, "127.0.0.1", argv[3]));
  state (h, "aio_connect_tcp refused");
  T (nbd_connect_socket (h, -1));
  state (h, "bad socket");
  T (nbd_connect_unix (h, argv[1]));
  state (h, "connected after failures");
  nbd_close (h);

  h = nbd_create ();
  fd = socket (AF_UNIX, SOCK_STREAM, 0);
  if (connect (fd, (struct sockaddr *) &sun, sizeof sun) == -1) return 1;
  T (nbd_connect_socket (h, fd));
  state (h, "socket");
  T (nbd_get_size (h));
  nbd_close (h);

  h = nbd_create ();
  T (nbd_aio_connect (h, (struct sockaddr *) &sun, sizeof sun));
  while (nbd_aio_is_connecting (h) || nbd_aio_is_negotiating (h))
    if (nbd_poll (h, 1000) == -1) break;
  state (h, "aio_connect unix");
  nbd_close (h);

  h = nbd_create ();
  sin.sin_port = htons (atoi (argv[3]));
  sin.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  T (nbd_aio_connect (h, (struct sockaddr *) &sin, sizeof sin));
  for (int i = 0; i < 20 && (nbd_aio_is_connecting (h) || nbd_aio_is_negotiating (h)); i++)
    if (T (nbd_poll (h, 1000)) == -1) break;
  state (h, "aio_connect refused");
  nbd_close (h);

  h = nbd_create ();
  T (nbd_aio_connect (h, NULL, 0));
  T (nbd_aio_connect (h, (struct sockaddr *) &sun, 1));
  state (h, "aio_connect bad length");
  nbd_close (h);

  h = nbd_create ();
  T (nbd_aio_connect_tcp (h, "127.0.0.1", argv[2]));
  while (nbd_aio_is_connecting (h) || nbd_aio_is_negotiating (h))
    if (nbd_poll (h, 1000) == -1) break;
  state (h, "aio_connect_tcp");
  T (nbd_aio_connect_socket (h, 0));
  T (nbd_aio_connect_vsock (h, 1, 1));
  T (nbd_connect_vsock (h, 1, 1));
  nbd_close (h);

  h = nbd_create ();
  T (nbd_connect_vsock (h, 1, 0xfffffffe));
  state (h, "vsock");
  nbd_close (h);
  say ("end");
  return 0;
}
