/* libnbd-ext.h: nbd-rs extensions to the libnbd 1.24 API.
 *
 * Hand-written (the functions are in nbd-ffi/src/ext.rs). Everything here
 * is beyond libnbd: programs that use it need nbd-rs's libnbd.so.0, whose
 * extension symbols sit in their own version node, NBDRS_0.2. Nothing here
 * changes a libnbd default. Include it after <libnbd.h>.
 */

#ifndef LIBNBD_EXT_H
#define LIBNBD_EXT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct nbd_handle;

/* Defined when the extensions below are available. */
#define NBDRS_HAVE_TIMEOUT 1

/* Sets the handle's timeout in milliseconds. When a call waiting for the
 * server (a synchronous call such as nbd_pread or nbd_connect_uri,
 * including the handshake, the nbd_opt_* requests and the TLS handshake,
 * or nbd_poll and nbd_poll2) finds that the server made no progress (no
 * byte received or sent) for this long while something from it was due,
 * the connection is killed: the call returns -1 with errno ETIMEDOUT,
 * every command in flight completes with ETIMEDOUT, and the handle is
 * dead. A program driving the socket with its own loop
 * (nbd_aio_notify_read/write) must time out on its own.
 *
 * 0, the default, turns the timeout off: calls wait as long as libnbd's do.
 * Values above INT64_MAX fail with EINVAL. May be called at any time and
 * from any thread. Returns 0, or -1 on error (nbd_get_error).
 */
extern int nbdrs_set_timeout (struct nbd_handle *h, uint64_t ms);

/* Returns the handle's timeout in milliseconds (0: none), or -1 on error. */
extern int64_t nbdrs_get_timeout (struct nbd_handle *h);

#ifdef __cplusplus
}
#endif

#endif /* LIBNBD_EXT_H */
