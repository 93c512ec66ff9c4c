/* handles: memory per connected, idle handle.
 *
 *   handles URI N
 *
 * Creates and connects one handle and closes it (so that one-time library
 * setup is not counted), reads VmRSS from /proc/self/status, then creates
 * and connects N handles and keeps them all open and idle, reads VmRSS
 * again, and closes them.  Prints
 *
 *   result name=handles n=N rss_before_kib=A rss_after_kib=B
 *          heap_before=H heap_after=I secs=S cpu=C
 *
 * heap_* are the bytes malloc has handed out (glibc mallinfo2 uordblks +
 * hblkhd), which tells allocated memory from touched pages; secs and cpu
 * cover creating and connecting the N handles.  The caller
 * must allow N + a few open files (ulimit -n).
 */
#define _POSIX_C_SOURCE 200809L

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <libnbd.h>

#include "clock.h"

static void
die (const char *what)
{
  fprintf (stderr, "handles: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}


static long
vm_rss_kib (void)
{
  char line[256];
  long kib = -1;
  FILE *f = fopen ("/proc/self/status", "r");

  if (f == NULL) {
    perror ("/proc/self/status");
    exit (EXIT_FAILURE);
  }
  while (fgets (line, sizeof line, f) != NULL)
    if (strncmp (line, "VmRSS:", 6) == 0) {
      kib = strtol (line + 6, NULL, 10);
      break;
    }
  fclose (f);
  if (kib < 0) {
    fprintf (stderr, "handles: no VmRSS in /proc/self/status\n");
    exit (EXIT_FAILURE);
  }
  return kib;
}

static size_t
heap_bytes (void)
{
  struct mallinfo2 mi = mallinfo2 ();

  return mi.uordblks + mi.hblkhd;
}

static struct nbd_handle *
open_handle (const char *uri)
{
  struct nbd_handle *nbd = nbd_create ();

  if (nbd == NULL)
    die ("nbd_create");
  /* (A TLS URI may name a PSK file.) */
  if (nbd_set_uri_allow_local_file (nbd, true) == -1)
    die ("nbd_set_uri_allow_local_file");
  if (nbd_connect_uri (nbd, uri) == -1)
    die ("nbd_connect_uri");
  return nbd;
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *warm, **h;
  long n, i, before, after;
  size_t heap_before, heap_after;
  double t0, c0, t1, c1;

  if (argc != 3) {
    fprintf (stderr, "usage: %s URI N\n", argv[0]);
    return EXIT_FAILURE;
  }
  n = atol (argv[2]);
  h = calloc ((size_t) n, sizeof *h);
  if (h == NULL) {
    perror ("calloc");
    return EXIT_FAILURE;
  }

  warm = open_handle (argv[1]);
  printf ("library %s %s\n", nbd_get_package_name (warm),
          nbd_get_version (warm));
  nbd_close (warm);

  heap_before = heap_bytes ();
  before = vm_rss_kib ();
  c0 = cpu_seconds ();
  t0 = now ();
  for (i = 0; i < n; i++)
    h[i] = open_handle (argv[1]);
  t1 = now ();
  c1 = cpu_seconds ();
  after = vm_rss_kib ();
  heap_after = heap_bytes ();

  printf ("result name=handles n=%ld rss_before_kib=%ld rss_after_kib=%ld"
          " heap_before=%zu heap_after=%zu secs=%.6f cpu=%.6f\n",
          n, before, after, heap_before, heap_after, t1 - t0, c1 - c0);

  for (i = 0; i < n; i++)
    nbd_close (h[i]);
  free (h);
  return EXIT_SUCCESS;
}
