/* Differential trace: synchronous commands, flags, bad arguments, server
 * errors.  argv[1]: URI of a 1 MiB nbdkit memory export; argv[2]: URI of
 * an export whose every write fails with EIO (nbdkit error filter);
 * argv[3]: a read-only export. */
#include "trace.h"

static int
chunk_cb (void *user_data, const void *subbuf, size_t count, uint64_t offset,
          unsigned status, int *error)
{
  int ret = *(int *) user_data;
  (void) subbuf;
  say ("  chunk count=%zu offset=%" PRIu64 " status=%u *error=%s -> %d",
       count, offset, status, errname (*error), ret);
  if (ret == -1)
    *error = EPERM;
  return ret;
}

static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr_entries, int *error)
{
  size_t i;
  int ret = *(int *) user_data;
  say ("  extents %s offset=%" PRIu64 " n=%zu *error=%s -> %d", metacontext,
       offset, nr_entries, errname (*error), ret);
  for (i = 0; i + 1 < nr_entries && i < 8; i += 2)
    say ("    %u %u", entries[i], entries[i + 1]);
  return ret;
}

static int
extent64_cb (void *user_data, const char *metacontext, uint64_t offset,
             nbd_extent *entries, size_t nr_entries, int *error)
{
  size_t i;
  int ret = *(int *) user_data;
  say ("  extents64 %s offset=%" PRIu64 " n=%zu *error=%s -> %d", metacontext,
       offset, nr_entries, errname (*error), ret);
  for (i = 0; i < nr_entries && i < 4; i++)
    say ("    %" PRIu64 " %" PRIu64, entries[i].length, entries[i].flags);
  return ret;
}

static void
free_tag (void *user_data)
{
  say ("  free %s", (const char *) user_data);
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h, *e, *ro;
  char buf[8192], big[4096];
  int zero = 0, minus = -1;

  if (argc != 4) return 2;
  memset (big, 0x5a, sizeof big);
  h = nbd_create ();
  if (!h) return 1;

  /* Commands before connecting. */
  T (nbd_pread (h, buf, 512, 0, 0));
  T (nbd_pwrite (h, big, 512, 0, 0));
  T (nbd_flush (h, 0));
  T (nbd_trim (h, 512, 0, 0));
  T (nbd_zero (h, 512, 0, 0));
  T (nbd_cache (h, 512, 0, 0));

  T (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  T (nbd_connect_uri (h, argv[1]));
  T (nbd_pwrite (h, big, 4096, 4096, 0));
  memset (buf, 0xff, sizeof buf);
  T (nbd_pread (h, buf, 16, 4096 - 8, 0));
  dump ("read", buf, 16);
  T (nbd_pwrite (h, big, 512, 0, LIBNBD_CMD_FLAG_FUA));
  T (nbd_pwrite (h, big, 512, 0, LIBNBD_CMD_FLAG_DF));
  T (nbd_pwrite (h, big, 512, 0, 0x10000));
  T (nbd_pwrite (h, NULL, 512, 0, 0));
  T (nbd_pwrite (h, big, 0, 0, 0));
  T (nbd_pread (h, buf, 0, 0, 0));
  /* nbd_pread (h, NULL, 512, 0, 0) is not traced: libnbd 1.24.4 zeroes
   * the buffer before checking it and dies of SIGSEGV; ours fails with
   * EFAULT (docs/api-fidelity.md, "on purpose"). */
  T (nbd_pread (h, buf, 512, 0, LIBNBD_CMD_FLAG_DF));
  T (nbd_pread (h, buf, 512, 0, LIBNBD_CMD_FLAG_FUA));
  T (nbd_pread (h, buf, 512, 1048576 - 256, 0));
  T (nbd_pread (h, buf, 512, 1048576, 0));
  T (nbd_pread (h, buf, 512, UINT64_MAX - 10, 0));
  {
    char *huge = calloc (1, 64 * 1024 * 1024 + 1);
    T (nbd_pread (h, huge, 64 * 1024 * 1024 + 1, 0, 0));
    T (nbd_pwrite (h, huge, 64 * 1024 * 1024 + 1, 0, 0));
    free (huge);
  }
  T (nbd_pwrite (h, big, 512, 1048576, 0));
  T (nbd_flush (h, 0));
  T (nbd_flush (h, LIBNBD_CMD_FLAG_FUA));
  T (nbd_trim (h, 4096, 0, 0));
  T (nbd_trim (h, 4096, 0, LIBNBD_CMD_FLAG_FUA));
  T (nbd_trim (h, 0, 0, 0));
  T (nbd_trim (h, 4096, 0, LIBNBD_CMD_FLAG_NO_HOLE));
  T (nbd_zero (h, 4096, 8192, LIBNBD_CMD_FLAG_NO_HOLE));
  T (nbd_zero (h, 4096, 8192, LIBNBD_CMD_FLAG_FAST_ZERO));
  T (nbd_zero (h, 4096, 8192, LIBNBD_CMD_FLAG_FUA | LIBNBD_CMD_FLAG_NO_HOLE));
  T (nbd_zero (h, 0, 0, 0));
  T (nbd_zero (h, 4096, 8192, LIBNBD_CMD_FLAG_DF));
  T (nbd_cache (h, 4096, 0, 0));
  T (nbd_cache (h, 4096, 0, LIBNBD_CMD_FLAG_FUA));
  T (nbd_pread (h, buf, 16, 4096 - 8, 0));
  dump ("after trim/zero", buf, 16);

  /* Structured read: callback return values. */
  T (nbd_pread_structured (h, buf, 1024, 4096, (nbd_chunk_callback) {
        .callback = chunk_cb, .user_data = &zero }, 0));
  T (nbd_pread_structured (h, buf, 1024, 4096, (nbd_chunk_callback) {
        .callback = chunk_cb, .user_data = &minus }, 0));
  T (nbd_pread_structured (h, buf, 1024, 4096, (nbd_chunk_callback) {
        .callback = chunk_cb, .user_data = &zero }, LIBNBD_CMD_FLAG_DF));
  T (nbd_pread_structured (h, buf, 1024, 4096, (nbd_chunk_callback) {
        .callback = NULL, .user_data = &zero }, 0));

  /* Block status. */
  T (nbd_block_status (h, 65536, 0, (nbd_extent_callback) {
        .callback = extent_cb, .user_data = &zero }, 0));
  T (nbd_block_status (h, 65536, 0, (nbd_extent_callback) {
        .callback = extent_cb, .user_data = &minus }, 0));
  T (nbd_block_status (h, 65536, 0, (nbd_extent_callback) {
        .callback = extent_cb, .user_data = &zero }, LIBNBD_CMD_FLAG_REQ_ONE));
  T (nbd_block_status (h, 65536, 0, (nbd_extent_callback) {
        .callback = extent_cb, .user_data = &zero }, LIBNBD_CMD_FLAG_FUA));
  T (nbd_block_status (h, 0, 0, (nbd_extent_callback) {
        .callback = extent_cb, .user_data = &zero }, 0));
  T (nbd_block_status_64 (h, 65536, 0, (nbd_extent64_callback) {
        .callback = extent64_cb, .user_data = &zero }, 0));
  T (nbd_block_status_64 (h, 65536, 0, (nbd_extent64_callback) {
        .callback = NULL, .user_data = &zero }, 0));
  T (nbd_block_status_filter (h, 65536, 0, NULL, (nbd_extent64_callback) {
        .callback = extent64_cb, .user_data = &zero }, 0));
  {
    char *ctx[] = { (char *) "base:allocation", NULL };
    T (nbd_block_status_filter (h, 65536, 0, ctx, (nbd_extent64_callback) {
          .callback = extent64_cb, .user_data = &zero }, 0));
  }

  /* .free runs once even when the call fails at once. */
  T (nbd_block_status_64 (h, 65536, 0, (nbd_extent64_callback) {
        .callback = extent64_cb, .user_data = &zero, .free = NULL }, 0x8000));
  T (nbd_pread_structured (h, buf, 1024, 4096, (nbd_chunk_callback) {
        .callback = chunk_cb, .user_data = &zero, .free = NULL }, 0x8000));
  (void) free_tag;

  T (nbd_shutdown (h, 0));
  T (nbd_pread (h, buf, 512, 0, 0));
  nbd_close (h);

  /* Server errors. */
  e = nbd_create ();
  T (nbd_connect_uri (e, argv[2]));
  T (nbd_pread (e, buf, 512, 0, 0));
  T (nbd_pwrite (e, big, 512, 0, 0));
  T (nbd_trim (e, 512, 0, 0));
  T (nbd_zero (e, 512, 0, 0));
  T (nbd_flush (e, 0));
  T (nbd_pread (e, buf, 512, 0, 0));
  state (e, "after errors");
  nbd_close (e);

  /* Read-only export. */
  ro = nbd_create ();
  T (nbd_connect_uri (ro, argv[3]));
  T (nbd_is_read_only (ro));
  T (nbd_pwrite (ro, big, 512, 0, 0));
  T (nbd_trim (ro, 512, 0, 0));
  T (nbd_zero (ro, 512, 0, 0));
  T (nbd_pread (ro, buf, 512, 0, 0));
  nbd_close (ro);

  /* Block status without a metadata context: none asked for, or asked
   * for but never requested from the server. */
  h = nbd_create ();
  T (nbd_connect_uri (h, argv[1]));
  T (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  T (nbd_block_status (h, 512, 0, (nbd_extent_callback) {
        .callback = extent_cb, .user_data = &zero }, 0));
  T (nbd_block_status_64 (h, 512, 0, (nbd_extent64_callback) {
        .callback = extent64_cb, .user_data = &zero }, 0));
  T (nbd_aio_block_status (h, 512, 0, (nbd_extent_callback) {
        .callback = extent_cb, .user_data = &zero }, NBD_NULL_COMPLETION, 0));
  nbd_close (h);
  h = nbd_create ();
  T (nbd_set_request_meta_context (h, false));
  T (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  T (nbd_connect_uri (h, argv[1]));
  T (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  T (nbd_block_status (h, 512, 0, (nbd_extent_callback) {
        .callback = extent_cb, .user_data = &zero }, 0));
  nbd_close (h);
  say ("end");
  return 0;
}
