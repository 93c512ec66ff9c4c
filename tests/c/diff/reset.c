/* Differential trace: the connection is reset while commands are in
 * flight.  argv[1]: URI of an nbdkit memory export behind a long read
 * delay (one thread: the second request stays unread); argv[2]: that
 * server's PID, which this program kills (SIGKILL) and waits for. */
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
  static char buf[3][512];
  struct cb_spec a = { "first", 1, 0 }, b = { "second", 1, 0 }, c = { "third", 0, 0 };
  int64_t c3;
  pid_t pid;
  int i;

  if (argc != 3) return 2;
  pid = atoi (argv[2]);
  h = nbd_create ();
  T (nbd_connect_uri (h, argv[1]));
  T (nbd_aio_pread (h, buf[0], 512, 0, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &a, .free = free_cb }, 0));
  T (nbd_aio_pread (h, buf[1], 512, 0, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &b, .free = free_cb }, 0));
  c3 = T (nbd_aio_pread (h, buf[2], 512, 0, (nbd_completion_callback) {
        .callback = completion_cb, .user_data = &c, .free = free_cb }, 0));
  T (nbd_aio_in_flight (h));
  kill (pid, SIGKILL);
  wait_gone (pid);
  say ("server killed");
  for (i = 0; i < 20 && !nbd_aio_is_dead (h) && !nbd_aio_is_closed (h); i++)
    T (nbd_poll (h, 1000));
  state (h, "after the reset");
  T (nbd_aio_in_flight (h));
  T (nbd_aio_command_completed (h, c3));
  T (nbd_pread (h, buf[0], 512, 0, 0));
  say ("close");
  nbd_close (h);
  say ("end");
  return 0;
}
