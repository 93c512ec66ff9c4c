/* Differential trace: the server goes away under a connected handle.
 * argv[1]: URI of an nbdkit memory export; argv[2]: that server's PID,
 * which this program kills (SIGKILL) and waits for. */
#include "trace.h"
#include <signal.h>
#include <time.h>

static void
wait_gone (pid_t pid)
{
  char path[64];
  struct timespec ts = { 0, 10 * 1000 * 1000 };
  int i;
  snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
  for (i = 0; i < 1000; i++) {
    FILE *f = fopen (path, "r");
    char buf[512] = "";
    if (!f) return;
    if (fgets (buf, sizeof buf, f)) {
      char *p = strrchr (buf, ')');
      fclose (f);
      if (p && p[1] == ' ' && p[2] == 'Z') return;
    } else
      fclose (f);
    nanosleep (&ts, NULL);
  }
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  char buf[512];
  struct cb_spec cb = { "in-flight", 1, 0 };
  pid_t pid;

  if (argc != 3) return 2;
  pid = atoi (argv[2]);
  h = nbd_create ();
  T (nbd_connect_uri (h, argv[1]));
  T (nbd_pread (h, buf, 512, 0, 0));
  kill (pid, SIGKILL);
  wait_gone (pid);
  say ("server killed");
  /* The first request after the kill races with the kernel: if it reached
   * the dead server's socket, the peer answers with a reset (ECONNRESET),
   * otherwise the client sees the end of the connection (ENOTCONN).
   * libnbd 1.24.4 gives either, and so do we; the trace names the class,
   * any other result is printed as it is. */
  {
    int r = nbd_pread (h, buf, 512, 0, 0);
    int e = nbd_get_errno ();
    if (r == -1 && (e == ENOTCONN || e == ECONNRESET))
      say ("nbd_pread (h, buf, 512, 0, 0) = -1 ENOTCONN or ECONNRESET");
    else
      trace_int ("nbd_pread (h, buf, 512, 0, 0)", r);
  }
  state (h, "after the server died");
  T (nbd_pread (h, buf, 512, 0, 0));
  T (nbd_aio_pread (h, buf, 512, 0, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &cb, .free = free_cb }, 0));
  T (nbd_aio_in_flight (h));
  T (nbd_poll (h, 0));
  T (nbd_shutdown (h, 0));
  T (nbd_get_size (h));
  T (nbd_aio_get_direction (h));
  T (nbd_aio_get_fd (h) >= 0 ? 0 : -1);
  say ("close");
  nbd_close (h);
  say ("end");
  return 0;
}
