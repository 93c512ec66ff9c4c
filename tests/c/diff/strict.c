/* Differential trace: strict mode bits.  argv[1]: URI of a 1 MiB nbdkit
 * memory export with a 512-byte minimum block size (blocksize-policy). */
#include "trace.h"

static void
probes (struct nbd_handle *h)
{
  static char buf[8192];
  T (nbd_pread (h, buf, 512, 1048576, 0));
  T (nbd_pread (h, buf, 100, 3, 0));
  T (nbd_pwrite (h, buf, 512, 0, LIBNBD_CMD_FLAG_FUA));
  T (nbd_pread (h, buf, 512, 0, LIBNBD_CMD_FLAG_DF));
  T (nbd_pread (h, buf, 512, 0, 0x100));
  T (nbd_trim (h, 0, 0, 0));
  T (nbd_zero (h, 512, 0, LIBNBD_CMD_FLAG_FAST_ZERO | LIBNBD_CMD_FLAG_NO_HOLE));
  T (nbd_cache (h, 512, 0, 0));
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;

  if (argc != 2) return 2;
  h = nbd_create ();
  T (nbd_get_strict_mode (h));
  T (nbd_set_strict_mode (h, 0x1000));
  T (nbd_set_strict_mode (h, LIBNBD_STRICT_MASK));
  T (nbd_get_strict_mode (h));
  T (nbd_connect_uri (h, argv[1]));
  T (nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM));
  say ("-- all strict bits");
  probes (h);
  T (nbd_set_strict_mode (h, 0));
  T (nbd_get_strict_mode (h));
  say ("-- no strict bits (set after connecting)");
  probes (h);
  T (nbd_set_strict_mode (h, LIBNBD_STRICT_BOUNDS));
  say ("-- bounds only");
  probes (h);
  T (nbd_set_strict_mode (h, LIBNBD_STRICT_ALIGN));
  say ("-- align only");
  probes (h);
  T (nbd_set_strict_mode (h, LIBNBD_STRICT_FLAGS));
  say ("-- flags only");
  probes (h);
  T (nbd_set_strict_mode (h, LIBNBD_STRICT_ZERO_SIZE));
  say ("-- zero size only");
  probes (h);
  state (h, "end");
  nbd_close (h);
  say ("end");
  return 0;
}
