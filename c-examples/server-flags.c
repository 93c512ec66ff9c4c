/* server-flags: connect (asking for the base:allocation metadata
 * context) and print what was negotiated with the server, one
 * "key: value" line each.  The capability keys use the same names as
 * nbdinfo(1).
 *
 *   server-flags nbd://localhost/export
 *   server-flags /tmp/nbd.sock
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

static void
die (const char *what)
{
  fprintf (stderr, "server-flags: %s: %s\n", what, nbd_get_error ());
  exit (EXIT_FAILURE);
}

static int
connect_target (struct nbd_handle *nbd, const char *target)
{
  if (strstr (target, "://") != NULL)
    return nbd_connect_uri (nbd, target);
  return nbd_connect_unix (nbd, target);
}

static void
print_bool (const char *key, int value)
{
  if (value == -1)
    die (key);
  printf ("%s: %s\n", key, value ? "true" : "false");
}

static void
print_block_size (struct nbd_handle *nbd, const char *key, int which)
{
  int64_t v = nbd_get_block_size (nbd, which);

  if (v == -1)
    die (key);
  if (v == 0)
    printf ("%s: 0 (not advertised)\n", key);
  else
    printf ("%s: %" PRIi64 "\n", key, v);
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *nbd;
  const char *protocol;
  uint32_t hflags;
  int64_t size;
  int meta;

  if (argc != 2) {
    fprintf (stderr, "usage: %s NBD-URI|UNIX-SOCKET\n", argv[0]);
    return EXIT_FAILURE;
  }

  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");
  if (nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1)
    die ("nbd_add_meta_context");
  if (connect_target (nbd, argv[1]) == -1)
    die ("connect");

  protocol = nbd_get_protocol (nbd);
  if (protocol == NULL)
    die ("nbd_get_protocol");
  printf ("protocol: %s\n", protocol);

  hflags = nbd_get_handshake_flags (nbd);
  printf ("handshake_flags: 0x%" PRIx32 "%s%s\n", hflags,
          (hflags & LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE) ? " fixed_newstyle" : "",
          (hflags & LIBNBD_HANDSHAKE_FLAG_NO_ZEROES) ? " no_zeroes" : "");

  print_bool ("structured_replies", nbd_get_structured_replies_negotiated (nbd));
  print_bool ("tls", nbd_get_tls_negotiated (nbd));

  size = nbd_get_size (nbd);
  if (size == -1)
    die ("nbd_get_size");
  printf ("export-size: %" PRIi64 "\n", size);

  print_bool ("is_read_only", nbd_is_read_only (nbd));
  print_bool ("is_rotational", nbd_is_rotational (nbd));
  print_bool ("can_cache", nbd_can_cache (nbd));
  print_bool ("can_df", nbd_can_df (nbd));
  print_bool ("can_fast_zero", nbd_can_fast_zero (nbd));
  print_bool ("can_flush", nbd_can_flush (nbd));
  print_bool ("can_fua", nbd_can_fua (nbd));
  print_bool ("can_multi_conn", nbd_can_multi_conn (nbd));
  print_bool ("can_trim", nbd_can_trim (nbd));
  print_bool ("can_zero", nbd_can_zero (nbd));

  meta = nbd_can_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION);
  if (meta == -1)
    die ("nbd_can_meta_context");
  printf ("can_meta_context %s: %s\n", LIBNBD_CONTEXT_BASE_ALLOCATION,
          meta ? "true" : "false");

  print_block_size (nbd, "block_size_minimum", LIBNBD_SIZE_MINIMUM);
  print_block_size (nbd, "block_size_preferred", LIBNBD_SIZE_PREFERRED);
  print_block_size (nbd, "block_size_maximum", LIBNBD_SIZE_MAXIMUM);

  if (nbd_shutdown (nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (nbd);
  return EXIT_SUCCESS;
}
