/* aio-poll: drive libnbd's asynchronous API from our own poll(2) loop.
 *
 * The program connects with nbd_aio_connect_uri / nbd_aio_connect_unix,
 * then runs three batches, each with all its commands in flight at once:
 *
 *   1. write every block with generation-1 data (completion callbacks
 *      retire the commands themselves by returning 1);
 *   2. rewrite the even blocks with generation-2 data while reading the
 *      odd ones back;
 *   3. read every block back.
 *
 * Read completion callbacks check the data and return 0, so the main loop
 * retires those commands with nbd_aio_command_completed.  The socket is
 * watched with poll(2) according to nbd_aio_get_direction, and libnbd is
 * told about readiness with nbd_aio_notify_read / nbd_aio_notify_write.
 *
 *   aio-poll nbd+unix:///?socket=/tmp/sock
 *   aio-poll /tmp/sock
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#define BLOCK     (64u * 1024)
#define MAX_CMDS  64u

struct state;

struct cmd {
  struct state *st;
  unsigned index;            /* block number */
  unsigned gen;              /* data generation written or expected */
  bool is_read;
  bool completed;            /* completion callback ran */
  bool retired;
  int error;                 /* errno reported to the callback */
  int64_t cookie;
  uint8_t *buf;
};

struct state {
  unsigned completions;
  unsigned bad_data;
  unsigned failures;
  int max_in_flight;
};

static void
die (const char *what)
{
  fprintf (stderr, "aio-poll: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}

static uint8_t
data_byte (uint64_t o, unsigned gen)
{
  return (uint8_t) ((o >> 2) ^ ((o >> 16) * 29u) ^ (gen * 0x5bu));
}

static void
fill (uint8_t *buf, unsigned index, unsigned gen)
{
  uint64_t base = (uint64_t) index * BLOCK;
  size_t i;

  for (i = 0; i < BLOCK; i++)
    buf[i] = data_byte (base + i, gen);
}

/* Waits for the socket to be ready in the direction libnbd wants, then
 * tells libnbd about it.
 */
static void
step (struct nbd_handle *nbd)
{
  struct pollfd pfd;
  unsigned dir;
  int fd, r = 0;

  fd = nbd_aio_get_fd (nbd);
  if (fd == -1)
    die ("nbd_aio_get_fd");
  dir = nbd_aio_get_direction (nbd);
  pfd.fd = fd;
  pfd.events = 0;
  pfd.revents = 0;
  if (dir & LIBNBD_AIO_DIRECTION_READ)
    pfd.events |= POLLIN;
  if (dir & LIBNBD_AIO_DIRECTION_WRITE)
    pfd.events |= POLLOUT;
  if (pfd.events == 0) {
    fprintf (stderr, "aio-poll: libnbd expects no socket activity (state %s)\n",
             nbd_connection_state (nbd));
    exit (EXIT_FAILURE);
  }

  if (poll (&pfd, 1, -1) == -1) {
    if (errno == EINTR)
      return;
    perror ("poll");
    exit (EXIT_FAILURE);
  }

  /* The direction may have changed; prefer reading when both are ready. */
  dir = nbd_aio_get_direction (nbd);
  if ((dir & LIBNBD_AIO_DIRECTION_READ) &&
      (pfd.revents & (POLLIN | POLLHUP | POLLERR)))
    r = nbd_aio_notify_read (nbd);
  else if ((dir & LIBNBD_AIO_DIRECTION_WRITE) &&
           (pfd.revents & (POLLOUT | POLLHUP | POLLERR)))
    r = nbd_aio_notify_write (nbd);
  if (r == -1)
    die ("notify");
}

static int
write_done (void *user_data, int *error)
{
  struct cmd *c = user_data;

  c->completed = true;
  c->error = *error;
  c->st->completions++;
  if (*error)
    c->st->failures++;
  return 1;                     /* retire the command now */
}

static int
read_done (void *user_data, int *error)
{
  struct cmd *c = user_data;
  uint64_t base = (uint64_t) c->index * BLOCK;
  size_t i;

  c->completed = true;
  c->error = *error;
  c->st->completions++;
  if (*error == 0) {
    for (i = 0; i < BLOCK; i++) {
      if (c->buf[i] != data_byte (base + i, c->gen)) {
        fprintf (stderr, "aio-poll: block %u: wrong byte at offset %" PRIu64
                 " (0x%02x, expected 0x%02x)\n", c->index, base + i,
                 c->buf[i], data_byte (base + i, c->gen));
        c->st->bad_data++;
        break;
      }
    }
  }
  return 0;                     /* the main loop retires it */
}

static void
issue (struct nbd_handle *nbd, struct cmd *c)
{
  uint64_t offset = (uint64_t) c->index * BLOCK;

  c->completed = c->retired = false;
  c->error = 0;
  if (c->is_read) {
    memset (c->buf, 0xee, BLOCK);
    c->cookie = nbd_aio_pread (nbd, c->buf, BLOCK, offset,
                               (nbd_completion_callback) {
                                 .callback = read_done, .user_data = c },
                               0);
  }
  else {
    fill (c->buf, c->index, c->gen);
    c->cookie = nbd_aio_pwrite (nbd, c->buf, BLOCK, offset,
                                (nbd_completion_callback) {
                                  .callback = write_done, .user_data = c },
                                0);
  }
  if (c->cookie == -1)
    die (c->is_read ? "nbd_aio_pread" : "nbd_aio_pwrite");
}

/* Issues every command of the batch, then runs the loop until all have
 * completed and been retired.
 */
static void
run_batch (struct nbd_handle *nbd, struct state *st, struct cmd *cmds,
           unsigned n)
{
  unsigned i, retired = 0;
  int in_flight;

  for (i = 0; i < n; i++)
    issue (nbd, &cmds[i]);
  in_flight = nbd_aio_in_flight (nbd);
  if (in_flight == -1)
    die ("nbd_aio_in_flight");
  if (in_flight > st->max_in_flight)
    st->max_in_flight = in_flight;

  while (retired < n) {
    for (i = 0; i < n; i++) {
      struct cmd *c = &cmds[i];
      int r;

      if (c->retired)
        continue;
      if (!c->is_read) {
        /* The callback retired it; the cookie is no longer known. */
        if (c->completed) {
          c->retired = true;
          retired++;
        }
        continue;
      }
      r = nbd_aio_command_completed (nbd, (uint64_t) c->cookie);
      if (r == -1) {
        fprintf (stderr, "aio-poll: read of block %u failed: %s\n",
                 c->index, nbd_get_error ());
        exit (EXIT_FAILURE);
      }
      if (r == 1) {
        if (!c->completed) {
          fprintf (stderr, "aio-poll: block %u retired before its callback\n",
                   c->index);
          exit (EXIT_FAILURE);
        }
        c->retired = true;
        retired++;
      }
    }
    if (retired < n)
      step (nbd);
  }

  if (st->failures || st->bad_data) {
    fprintf (stderr, "aio-poll: %u commands failed, %u reads had bad data\n",
             st->failures, st->bad_data);
    exit (EXIT_FAILURE);
  }
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *nbd;
  struct state st = { 0, 0, 0, 0 };
  struct cmd *cmds;
  int64_t size;
  unsigned n, i;
  int r;

  if (argc != 2) {
    fprintf (stderr, "usage: %s NBD-URI|UNIX-SOCKET\n", argv[0]);
    return EXIT_FAILURE;
  }

  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");

  if (strstr (argv[1], "://") != NULL)
    r = nbd_aio_connect_uri (nbd, argv[1]);
  else
    r = nbd_aio_connect_unix (nbd, argv[1]);
  if (r == -1)
    die ("aio connect");
  while (!nbd_aio_is_ready (nbd)) {
    if (nbd_aio_is_dead (nbd) || nbd_aio_is_closed (nbd)) {
      fprintf (stderr, "aio-poll: connection failed: %s\n", nbd_get_error ());
      exit (EXIT_FAILURE);
    }
    step (nbd);
  }
  printf ("connected (%s)\n", nbd_get_protocol (nbd));

  size = nbd_get_size (nbd);
  if (size == -1)
    die ("nbd_get_size");
  n = (unsigned) ((uint64_t) size / BLOCK < MAX_CMDS
                  ? (uint64_t) size / BLOCK : MAX_CMDS);
  if (n < 2) {
    fprintf (stderr, "aio-poll: export too small\n");
    exit (EXIT_FAILURE);
  }

  cmds = calloc (n, sizeof *cmds);
  if (cmds == NULL) {
    perror ("calloc");
    exit (EXIT_FAILURE);
  }
  for (i = 0; i < n; i++) {
    cmds[i].st = &st;
    cmds[i].index = i;
    cmds[i].buf = malloc (BLOCK);
    if (cmds[i].buf == NULL) {
      perror ("malloc");
      exit (EXIT_FAILURE);
    }
  }

  /* 1: write everything. */
  for (i = 0; i < n; i++) {
    cmds[i].is_read = false;
    cmds[i].gen = 1;
  }
  run_batch (nbd, &st, cmds, n);
  printf ("batch 1: wrote %u blocks\n", n);

  /* 2: rewrite even blocks, read odd blocks, all at once. */
  for (i = 0; i < n; i++) {
    cmds[i].is_read = (i % 2 == 1);
    cmds[i].gen = cmds[i].is_read ? 1 : 2;
  }
  run_batch (nbd, &st, cmds, n);
  printf ("batch 2: rewrote %u blocks, verified %u blocks\n",
          (n + 1) / 2, n / 2);

  /* 3: read everything. */
  for (i = 0; i < n; i++) {
    cmds[i].is_read = true;
    cmds[i].gen = (i % 2 == 1) ? 1 : 2;
  }
  run_batch (nbd, &st, cmds, n);
  printf ("batch 3: verified %u blocks\n", n);

  printf ("completions: %u, max in flight: %d\n", st.completions,
          st.max_in_flight);

  if (nbd_aio_disconnect (nbd, 0) == -1)
    die ("nbd_aio_disconnect");
  while (!nbd_aio_is_closed (nbd) && !nbd_aio_is_dead (nbd)) {
    if (nbd_aio_get_direction (nbd) == 0)
      break;
    step (nbd);
  }

  for (i = 0; i < n; i++)
    free (cmds[i].buf);
  free (cmds);
  nbd_close (nbd);
  printf ("aio-poll: OK\n");
  return EXIT_SUCCESS;
}
