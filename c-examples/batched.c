/* batched: write and then read back many blocks with asynchronous
 * commands, keeping at most DEPTH of them in flight at any time.
 *
 * The first 16 MiB of the export (or all of it when smaller) is cut into
 * 16 KiB blocks.  A fixed pool of DEPTH buffers ("slots") bounds the
 * queue: a new command is issued only when a slot is free, and the
 * completion callback frees its slot.  The loop is driven by nbd_poll.
 * Read completions check the data of their block.
 *
 *   batched nbd+unix:///?socket=/tmp/sock [DEPTH]
 *   batched /tmp/sock 32
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#define BLOCK     (16u * 1024)
#define AREA_MAX  (16u * 1024 * 1024)
#define DEFAULT_DEPTH 16u
#define MAX_DEPTH 256u

struct batch;

struct slot {
  struct batch *b;
  bool busy;
  uint64_t block;
  uint8_t *buf;
};

struct batch {
  unsigned in_flight;
  unsigned max_in_flight;
  uint64_t completed;
  uint64_t failed;
  uint64_t bad_data;
  bool reading;
};

static void
die (const char *what)
{
  fprintf (stderr, "batched: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}

static int
connect_target (struct nbd_handle *nbd, const char *target)
{
  if (strstr (target, "://") != NULL)
    return nbd_connect_uri (nbd, target);
  return nbd_connect_unix (nbd, target);
}

/* Every 4-byte word of a block holds the block number and the word
 * index, mixed, so blocks landing in the wrong place are noticed.
 */
static void
fill_block (uint8_t *buf, uint64_t block)
{
  size_t i;

  for (i = 0; i < BLOCK; i += 4) {
    uint32_t v = (uint32_t) (block * 0x9e3779b1u) ^ (uint32_t) (i * 0x85ebca6bu);

    memcpy (buf + i, &v, 4);
  }
}

static int
on_complete (void *user_data, int *error)
{
  struct slot *s = user_data;
  struct batch *b = s->b;

  if (*error) {
    fprintf (stderr, "batched: block %" PRIu64 " failed: %s\n",
             s->block, strerror (*error));
    b->failed++;
  }
  else if (b->reading) {
    uint8_t want[BLOCK];

    fill_block (want, s->block);
    if (memcmp (want, s->buf, BLOCK) != 0) {
      fprintf (stderr, "batched: block %" PRIu64 " read back wrong data\n",
               s->block);
      b->bad_data++;
    }
  }
  s->busy = false;
  b->in_flight--;
  b->completed++;
  return 1;                     /* retire the command */
}

/* Runs one pass (all writes or all reads) over nblocks blocks. */
static void
run_pass (struct nbd_handle *nbd, struct batch *b, struct slot *slots,
          unsigned depth, uint64_t nblocks, bool reading)
{
  uint64_t next = 0;
  unsigned i;

  b->reading = reading;
  b->completed = 0;
  while (b->completed < nblocks) {
    /* Fill every free slot. */
    for (i = 0; i < depth && next < nblocks; i++) {
      struct slot *s = &slots[i];
      nbd_completion_callback cb = { .callback = on_complete, .user_data = s };
      int64_t cookie;
      int n;

      if (s->busy)
        continue;
      s->busy = true;
      s->block = next++;
      b->in_flight++;
      if (b->in_flight > b->max_in_flight)
        b->max_in_flight = b->in_flight;
      if (reading) {
        memset (s->buf, 0, BLOCK);
        cookie = nbd_aio_pread (nbd, s->buf, BLOCK, s->block * BLOCK, cb, 0);
      }
      else {
        fill_block (s->buf, s->block);
        cookie = nbd_aio_pwrite (nbd, s->buf, BLOCK, s->block * BLOCK, cb, 0);
      }
      if (cookie == -1)
        die (reading ? "nbd_aio_pread" : "nbd_aio_pwrite");
      n = nbd_aio_in_flight (nbd);
      if (n == -1)
        die ("nbd_aio_in_flight");
      if ((unsigned) n > depth) {
        fprintf (stderr, "batched: %d commands in flight, queue depth is %u\n",
                 n, depth);
        exit (EXIT_FAILURE);
      }
    }
    if (b->completed < nblocks && nbd_poll (nbd, -1) == -1)
      die ("nbd_poll");
  }
  if (b->failed || b->bad_data) {
    fprintf (stderr, "batched: %" PRIu64 " failed, %" PRIu64 " wrong\n",
             b->failed, b->bad_data);
    exit (EXIT_FAILURE);
  }
  if (nbd_aio_in_flight (nbd) != 0) {
    fprintf (stderr, "batched: commands still in flight after the pass\n");
    exit (EXIT_FAILURE);
  }
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *nbd;
  struct batch b = { 0, 0, 0, 0, 0, false };
  struct slot *slots;
  unsigned depth = DEFAULT_DEPTH, i;
  uint64_t area, nblocks;
  int64_t size;

  if (argc != 2 && argc != 3) {
    fprintf (stderr, "usage: %s NBD-URI|UNIX-SOCKET [DEPTH]\n", argv[0]);
    return EXIT_FAILURE;
  }
  if (argc == 3) {
    char *end;
    unsigned long d = strtoul (argv[2], &end, 10);

    if (*end != '\0' || d == 0 || d > MAX_DEPTH) {
      fprintf (stderr, "batched: DEPTH must be 1..%u\n", MAX_DEPTH);
      return EXIT_FAILURE;
    }
    depth = (unsigned) d;
  }

  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");
  if (connect_target (nbd, argv[1]) == -1)
    die ("connect");

  size = nbd_get_size (nbd);
  if (size == -1)
    die ("nbd_get_size");
  area = (uint64_t) size < AREA_MAX ? (uint64_t) size : AREA_MAX;
  nblocks = area / BLOCK;
  if (nblocks == 0) {
    fprintf (stderr, "batched: export too small\n");
    exit (EXIT_FAILURE);
  }

  slots = calloc (depth, sizeof *slots);
  if (slots == NULL) {
    perror ("calloc");
    exit (EXIT_FAILURE);
  }
  for (i = 0; i < depth; i++) {
    slots[i].b = &b;
    slots[i].buf = malloc (BLOCK);
    if (slots[i].buf == NULL) {
      perror ("malloc");
      exit (EXIT_FAILURE);
    }
  }

  run_pass (nbd, &b, slots, depth, nblocks, false);
  printf ("wrote %" PRIu64 " blocks of %u bytes\n", nblocks, BLOCK);
  run_pass (nbd, &b, slots, depth, nblocks, true);
  printf ("read and verified %" PRIu64 " blocks of %u bytes\n", nblocks, BLOCK);
  printf ("queue depth %u, max in flight %u\n", depth, b.max_in_flight);

  for (i = 0; i < depth; i++)
    free (slots[i].buf);
  free (slots);
  if (nbd_shutdown (nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (nbd);
  printf ("batched: OK\n");
  return EXIT_SUCCESS;
}
