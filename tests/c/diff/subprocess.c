/* Differential trace: subprocesses.  argv[1]: nbdkit's run wrapper
 * ("ROOT/run"), argv[2]: the memory plugin's path. */
#include "trace.h"
#include <signal.h>
#include <sys/wait.h>

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  char buf[512];

  if (argc != 3) return 2;
  char *cmd[] = { argv[1], (char *) "nbdkit", (char *) "-s", (char *) "--exit-with-parent",
                  argv[2], (char *) "1M", NULL };
  char *bad[] = { (char *) "/nonexistent/program", NULL };
  char *empty[] = { NULL };

  h = nbd_create ();
  T (nbd_get_subprocess_pid (h));
  T (nbd_kill_subprocess (h, 0));
  T (nbd_connect_command (h, NULL));
  T (nbd_connect_command (h, empty));
  state (h, "after empty argv");
  nbd_close (h);

  h = nbd_create ();
  T (nbd_connect_command (h, bad));
  state (h, "after missing program");
  T (nbd_get_subprocess_pid (h) > 0);
  nbd_close (h);

  h = nbd_create ();
  T (nbd_connect_command (h, cmd));
  state (h, "connected");
  T (nbd_get_subprocess_pid (h) > 0);
  T (nbd_pread (h, buf, 512, 0, 0));
  T (nbd_kill_subprocess (h, -1));
  T (nbd_kill_subprocess (h, 0));
  state (h, "after kill_subprocess");
  T (nbd_get_subprocess_pid (h) > 0);
  T (nbd_kill_subprocess (h, SIGTERM));
  say ("close");
  nbd_close (h);

  h = nbd_create ();
  T (nbd_connect_command (h, cmd));
  T (nbd_shutdown (h, 0));
  T (nbd_get_subprocess_pid (h) > 0);
  T (nbd_kill_subprocess (h, 0));
  nbd_close (h);

  h = nbd_create ();
  T (nbd_set_socket_activation_name (h, "x"));
  TS (nbd_get_socket_activation_name (h));
  T (nbd_set_socket_activation_name (h, ""));
  T (nbd_set_socket_activation_name (h, "bad:name"));
  {
    char *sa[] = { argv[1], (char *) "nbdkit", (char *) "--exit-with-parent", argv[2], (char *) "1M", NULL };
    T (nbd_connect_systemd_socket_activation (h, sa));
  }
  state (h, "socket activation");
  T (nbd_get_size (h));
  T (nbd_get_subprocess_pid (h) > 0);
  nbd_close (h);
  while (waitpid (-1, NULL, WNOHANG) > 0)
    ;
  say ("end");
  return 0;
}
