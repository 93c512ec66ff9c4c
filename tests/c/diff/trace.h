/* Canonical call traces for the differential tests (tests/tests/differential.rs).
 *
 * Every program under tests/c/diff/ is compiled once against libnbd 1.24's
 * header and run on libnbd 1.24.4 and on the library under test; both runs
 * must print the same lines.  Each traced call prints its source text, its
 * return value and, when it failed, the errno name nbd_get_errno() gives.
 * Error messages are not printed: their wording is each library's own.
 */
#ifndef DIFF_TRACE_H
#define DIFF_TRACE_H

#define _GNU_SOURCE
/* NULL is passed on purpose, to see each library refuse it. */
#define LIBNBD_ATTRIBUTE_NONNULL(...)
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libnbd.h>

#pragma GCC diagnostic ignored "-Wunused-function"

static const char *
errname (int e)
{
  static char buf[32];
  switch (e) {
  case 0: return "0";
  case EPERM: return "EPERM";
  case ENOENT: return "ENOENT";
  case ESRCH: return "ESRCH";
  case EINTR: return "EINTR";
  case EIO: return "EIO";
  case E2BIG: return "E2BIG";
  case EBADF: return "EBADF";
  case ECHILD: return "ECHILD";
  case EAGAIN: return "EAGAIN";
  case ENOMEM: return "ENOMEM";
  case EACCES: return "EACCES";
  case EFAULT: return "EFAULT";
  case EBUSY: return "EBUSY";
  case EEXIST: return "EEXIST";
  case ENOTDIR: return "ENOTDIR";
  case EINVAL: return "EINVAL";
  case ENOSPC: return "ENOSPC";
  case EPIPE: return "EPIPE";
  case ERANGE: return "ERANGE";
  case ENAMETOOLONG: return "ENAMETOOLONG";
  case ENOSYS: return "ENOSYS";
  case EPROTO: return "EPROTO";
  case EOVERFLOW: return "EOVERFLOW";
  case ENOTSOCK: return "ENOTSOCK";
  case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
  case ENOTSUP: return "ENOTSUP";
  case EAFNOSUPPORT: return "EAFNOSUPPORT";
  case EADDRINUSE: return "EADDRINUSE";
  case ECONNABORTED: return "ECONNABORTED";
  case ECONNRESET: return "ECONNRESET";
  case ENOTCONN: return "ENOTCONN";
  case ESHUTDOWN: return "ESHUTDOWN";
  case ETIMEDOUT: return "ETIMEDOUT";
  case ECONNREFUSED: return "ECONNREFUSED";
  case EHOSTUNREACH: return "EHOSTUNREACH";
  case EALREADY: return "EALREADY";
  case EINPROGRESS: return "EINPROGRESS";
  case ECANCELED: return "ECANCELED";
  case EBADMSG: return "EBADMSG";
  case ENODEV: return "ENODEV";
  case ENXIO: return "ENXIO";
  case ETXTBSY: return "ETXTBSY";
  case ENOTTY: return "ENOTTY";
  case EFBIG: return "EFBIG";
  case EROFS: return "EROFS";
  case EDOM: return "EDOM";
  case EILSEQ: return "EILSEQ";
  default:
    snprintf (buf, sizeof buf, "errno%d", e);
    return buf;
  }
}

/* Every line goes out at once, so that the order of lines printed by
 * callbacks and by the main flow is the order of events. */
static void
say (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vprintf (fmt, ap);
  va_end (ap);
  putchar ('\n');
  fflush (stdout);
}

/* An integer-valued call: "text = value", or "text = -1 ERRNO". */
static int64_t
trace_int (const char *text, int64_t r)
{
  if (r == -1)
    say ("%s = -1 %s", text, errname (nbd_get_errno ()));
  else
    say ("%s = %" PRId64, text, r);
  return r;
}
#define T(expr) trace_int (#expr, (int64_t) (expr))

/* A call returning a malloc'ed string (freed here). */
static void
trace_str (const char *text, char *s)
{
  if (s == NULL)
    say ("%s = NULL %s", text, errname (nbd_get_errno ()));
  else
    say ("%s = \"%s\"", text, s);
  free (s);
}
#define TS(expr) trace_str (#expr, (expr))

/* A call returning a string the library owns. */
static void
trace_cstr (const char *text, const char *s)
{
  if (s == NULL)
    say ("%s = NULL %s", text, errname (nbd_get_errno ()));
  else
    say ("%s = \"%s\"", text, s);
}
#define TC(expr) trace_cstr (#expr, (expr))

/* Which of the seven states the handle is in. */
static void
state (struct nbd_handle *h, const char *when)
{
  say ("state %s: created=%d connecting=%d negotiating=%d ready=%d "
       "processing=%d dead=%d closed=%d",
       when, nbd_aio_is_created (h), nbd_aio_is_connecting (h),
       nbd_aio_is_negotiating (h), nbd_aio_is_ready (h),
       nbd_aio_is_processing (h), nbd_aio_is_dead (h), nbd_aio_is_closed (h));
}

/* A short hex rendering of a buffer. */
static void
dump (const char *what, const void *buf, size_t n)
{
  const unsigned char *p = buf;
  char line[3 * 64 + 1] = "";
  size_t i;
  if (n > 64)
    n = 64;
  for (i = 0; i < n; i++)
    sprintf (line + 3 * i, "%02x ", p[i]);
  say ("%s: %s", what, line);
}

/* Runs the poll loop until cookie completes: the result of
 * nbd_aio_command_completed, or 0 when nothing is left in flight (the
 * completion callback retired the command). */
static int
wait_for (struct nbd_handle *h, int64_t cookie)
{
  int r;
  int i;
  for (i = 0; i < 100000; i++) {
    r = nbd_aio_command_completed (h, cookie);
    if (r != 0 || nbd_aio_in_flight (h) <= 0)
      return r;
    if (nbd_poll (h, -1) == -1)
      return -1;
  }
  return -1;
}

/* A completion callback printing its tag and *error, returning what its
 * user_data says (as "ret:err" pairs). */
struct cb_spec {
  const char *tag;
  int ret;           /* what the callback returns */
  int set_error;     /* if non-zero, stored into *error */
};

static int
completion_cb (void *user_data, int *error)
{
  struct cb_spec *s = user_data;
  say ("  completion %s: *error=%s", s->tag, errname (*error));
  if (s->set_error)
    *error = s->set_error;
  return s->ret;
}

static void
free_cb (void *user_data)
{
  struct cb_spec *s = user_data;
  say ("  free %s", s->tag);
}

#endif
