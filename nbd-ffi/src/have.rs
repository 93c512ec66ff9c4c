//! One `LIBNBD_HAVE_NBD_<NAME>` macro per API function and callback type.
//!
//! C programs test these with `#ifdef` to find out whether the library they
//! compile against offers a call. They exist only for the header: cbindgen
//! turns each into `#define LIBNBD_HAVE_NBD_<NAME> 1`. A test checks that the
//! list matches the exported symbols one for one.

use std::ffi::c_int;

// ----- Callback types -----

/// The `nbd_chunk_callback` type is available.
pub const LIBNBD_HAVE_NBD_CHUNK_CALLBACK: c_int = 1;

/// The `nbd_completion_callback` type is available.
pub const LIBNBD_HAVE_NBD_COMPLETION_CALLBACK: c_int = 1;

/// The `nbd_debug_callback` type is available.
pub const LIBNBD_HAVE_NBD_DEBUG_CALLBACK: c_int = 1;

/// The `nbd_extent_callback` type is available.
pub const LIBNBD_HAVE_NBD_EXTENT_CALLBACK: c_int = 1;

/// The `nbd_list_callback` type is available.
pub const LIBNBD_HAVE_NBD_LIST_CALLBACK: c_int = 1;

/// The `nbd_context_callback` type is available.
pub const LIBNBD_HAVE_NBD_CONTEXT_CALLBACK: c_int = 1;

// ----- Functions -----

/// `nbd_add_meta_context` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_ADD_META_CONTEXT: c_int = 1;

/// `nbd_aio_block_status` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_BLOCK_STATUS: c_int = 1;

/// `nbd_aio_cache` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_CACHE: c_int = 1;

/// `nbd_aio_command_completed` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_COMMAND_COMPLETED: c_int = 1;

/// `nbd_aio_connect` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_CONNECT: c_int = 1;

/// `nbd_aio_connect_command` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_CONNECT_COMMAND: c_int = 1;

/// `nbd_aio_connect_socket` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_AIO_CONNECT_SOCKET: c_int = 1;

/// `nbd_aio_connect_systemd_socket_activation` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_AIO_CONNECT_SYSTEMD_SOCKET_ACTIVATION: c_int = 1;

/// `nbd_aio_connect_tcp` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_CONNECT_TCP: c_int = 1;

/// `nbd_aio_connect_unix` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_CONNECT_UNIX: c_int = 1;

/// `nbd_aio_connect_uri` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_CONNECT_URI: c_int = 1;

/// `nbd_aio_connect_vsock` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_AIO_CONNECT_VSOCK: c_int = 1;

/// `nbd_aio_disconnect` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_DISCONNECT: c_int = 1;

/// `nbd_aio_flush` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_FLUSH: c_int = 1;

/// `nbd_aio_get_direction` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_GET_DIRECTION: c_int = 1;

/// `nbd_aio_get_fd` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_GET_FD: c_int = 1;

/// `nbd_aio_in_flight` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_IN_FLIGHT: c_int = 1;

/// `nbd_aio_is_closed` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_IS_CLOSED: c_int = 1;

/// `nbd_aio_is_connecting` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_IS_CONNECTING: c_int = 1;

/// `nbd_aio_is_created` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_IS_CREATED: c_int = 1;

/// `nbd_aio_is_dead` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_IS_DEAD: c_int = 1;

/// `nbd_aio_is_negotiating` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_AIO_IS_NEGOTIATING: c_int = 1;

/// `nbd_aio_is_processing` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_IS_PROCESSING: c_int = 1;

/// `nbd_aio_is_ready` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_IS_READY: c_int = 1;

/// `nbd_aio_notify_read` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_NOTIFY_READ: c_int = 1;

/// `nbd_aio_notify_write` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_NOTIFY_WRITE: c_int = 1;

/// `nbd_aio_opt_abort` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_AIO_OPT_ABORT: c_int = 1;

/// `nbd_aio_opt_go` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_AIO_OPT_GO: c_int = 1;

/// `nbd_aio_opt_info` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_AIO_OPT_INFO: c_int = 1;

/// `nbd_aio_opt_list` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_AIO_OPT_LIST: c_int = 1;

/// `nbd_aio_opt_list_meta_context` is available (since LIBNBD_1.6).
pub const LIBNBD_HAVE_NBD_AIO_OPT_LIST_META_CONTEXT: c_int = 1;

/// `nbd_aio_peek_command_completed` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_PEEK_COMMAND_COMPLETED: c_int = 1;

/// `nbd_aio_pread` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_PREAD: c_int = 1;

/// `nbd_aio_pread_structured` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_PREAD_STRUCTURED: c_int = 1;

/// `nbd_aio_pwrite` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_PWRITE: c_int = 1;

/// `nbd_aio_trim` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_TRIM: c_int = 1;

/// `nbd_aio_zero` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_AIO_ZERO: c_int = 1;

/// `nbd_block_status` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_BLOCK_STATUS: c_int = 1;

/// `nbd_cache` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CACHE: c_int = 1;

/// `nbd_can_cache` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CAN_CACHE: c_int = 1;

/// `nbd_can_df` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CAN_DF: c_int = 1;

/// `nbd_can_fast_zero` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_CAN_FAST_ZERO: c_int = 1;

/// `nbd_can_flush` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CAN_FLUSH: c_int = 1;

/// `nbd_can_fua` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CAN_FUA: c_int = 1;

/// `nbd_can_meta_context` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CAN_META_CONTEXT: c_int = 1;

/// `nbd_can_multi_conn` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CAN_MULTI_CONN: c_int = 1;

/// `nbd_can_trim` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CAN_TRIM: c_int = 1;

/// `nbd_can_zero` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CAN_ZERO: c_int = 1;

/// `nbd_clear_debug_callback` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CLEAR_DEBUG_CALLBACK: c_int = 1;

/// `nbd_clear_meta_contexts` is available (since LIBNBD_1.6).
pub const LIBNBD_HAVE_NBD_CLEAR_META_CONTEXTS: c_int = 1;

/// `nbd_close` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CLOSE: c_int = 1;

/// `nbd_connect_command` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CONNECT_COMMAND: c_int = 1;

/// `nbd_connect_socket` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_CONNECT_SOCKET: c_int = 1;

/// `nbd_connect_systemd_socket_activation` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_CONNECT_SYSTEMD_SOCKET_ACTIVATION: c_int = 1;

/// `nbd_connect_tcp` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CONNECT_TCP: c_int = 1;

/// `nbd_connect_unix` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CONNECT_UNIX: c_int = 1;

/// `nbd_connect_uri` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CONNECT_URI: c_int = 1;

/// `nbd_connect_vsock` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_CONNECT_VSOCK: c_int = 1;

/// `nbd_connection_state` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CONNECTION_STATE: c_int = 1;

/// `nbd_create` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_CREATE: c_int = 1;

/// `nbd_flush` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_FLUSH: c_int = 1;

/// `nbd_get_block_size` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_GET_BLOCK_SIZE: c_int = 1;

/// `nbd_get_canonical_export_name` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_GET_CANONICAL_EXPORT_NAME: c_int = 1;

/// `nbd_get_debug` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_GET_DEBUG: c_int = 1;

/// `nbd_get_errno` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_GET_ERRNO: c_int = 1;

/// `nbd_get_error` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_GET_ERROR: c_int = 1;

/// `nbd_get_export_description` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_GET_EXPORT_DESCRIPTION: c_int = 1;

/// `nbd_get_export_name` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_GET_EXPORT_NAME: c_int = 1;

/// `nbd_get_full_info` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_GET_FULL_INFO: c_int = 1;

/// `nbd_get_handle_name` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_GET_HANDLE_NAME: c_int = 1;

/// `nbd_get_handshake_flags` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_GET_HANDSHAKE_FLAGS: c_int = 1;

/// `nbd_get_meta_context` is available (since LIBNBD_1.6).
pub const LIBNBD_HAVE_NBD_GET_META_CONTEXT: c_int = 1;

/// `nbd_get_nr_meta_contexts` is available (since LIBNBD_1.6).
pub const LIBNBD_HAVE_NBD_GET_NR_META_CONTEXTS: c_int = 1;

/// `nbd_get_opt_mode` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_GET_OPT_MODE: c_int = 1;

/// `nbd_get_package_name` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_GET_PACKAGE_NAME: c_int = 1;

/// `nbd_get_pread_initialize` is available (since LIBNBD_1.12).
pub const LIBNBD_HAVE_NBD_GET_PREAD_INITIALIZE: c_int = 1;

/// `nbd_get_private_data` is available (since LIBNBD_1.8).
pub const LIBNBD_HAVE_NBD_GET_PRIVATE_DATA: c_int = 1;

/// `nbd_get_protocol` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_GET_PROTOCOL: c_int = 1;

/// `nbd_get_request_block_size` is available (since LIBNBD_1.12).
pub const LIBNBD_HAVE_NBD_GET_REQUEST_BLOCK_SIZE: c_int = 1;

/// `nbd_get_request_structured_replies` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_GET_REQUEST_STRUCTURED_REPLIES: c_int = 1;

/// `nbd_get_size` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_GET_SIZE: c_int = 1;

/// `nbd_get_strict_mode` is available (since LIBNBD_1.6).
pub const LIBNBD_HAVE_NBD_GET_STRICT_MODE: c_int = 1;

/// `nbd_get_structured_replies_negotiated` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_GET_STRUCTURED_REPLIES_NEGOTIATED: c_int = 1;

/// `nbd_get_tls` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_GET_TLS: c_int = 1;

/// `nbd_get_tls_negotiated` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_GET_TLS_NEGOTIATED: c_int = 1;

/// `nbd_get_tls_username` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_GET_TLS_USERNAME: c_int = 1;

/// `nbd_get_tls_verify_peer` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_GET_TLS_VERIFY_PEER: c_int = 1;

/// `nbd_get_uri` is available (since LIBNBD_1.8).
pub const LIBNBD_HAVE_NBD_GET_URI: c_int = 1;

/// `nbd_get_version` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_GET_VERSION: c_int = 1;

/// `nbd_is_read_only` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_IS_READ_ONLY: c_int = 1;

/// `nbd_is_rotational` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_IS_ROTATIONAL: c_int = 1;

/// `nbd_kill_subprocess` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_KILL_SUBPROCESS: c_int = 1;

/// `nbd_opt_abort` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_OPT_ABORT: c_int = 1;

/// `nbd_opt_go` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_OPT_GO: c_int = 1;

/// `nbd_opt_info` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_OPT_INFO: c_int = 1;

/// `nbd_opt_list` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_OPT_LIST: c_int = 1;

/// `nbd_opt_list_meta_context` is available (since LIBNBD_1.6).
pub const LIBNBD_HAVE_NBD_OPT_LIST_META_CONTEXT: c_int = 1;

/// `nbd_poll` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_POLL: c_int = 1;

/// `nbd_pread` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_PREAD: c_int = 1;

/// `nbd_pread_structured` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_PREAD_STRUCTURED: c_int = 1;

/// `nbd_pwrite` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_PWRITE: c_int = 1;

/// `nbd_set_debug` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_SET_DEBUG: c_int = 1;

/// `nbd_set_debug_callback` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_SET_DEBUG_CALLBACK: c_int = 1;

/// `nbd_set_export_name` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_SET_EXPORT_NAME: c_int = 1;

/// `nbd_set_full_info` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_SET_FULL_INFO: c_int = 1;

/// `nbd_set_handle_name` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_SET_HANDLE_NAME: c_int = 1;

/// `nbd_set_handshake_flags` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_SET_HANDSHAKE_FLAGS: c_int = 1;

/// `nbd_set_opt_mode` is available (since LIBNBD_1.4).
pub const LIBNBD_HAVE_NBD_SET_OPT_MODE: c_int = 1;

/// `nbd_set_pread_initialize` is available (since LIBNBD_1.12).
pub const LIBNBD_HAVE_NBD_SET_PREAD_INITIALIZE: c_int = 1;

/// `nbd_set_private_data` is available (since LIBNBD_1.8).
pub const LIBNBD_HAVE_NBD_SET_PRIVATE_DATA: c_int = 1;

/// `nbd_set_request_block_size` is available (since LIBNBD_1.12).
pub const LIBNBD_HAVE_NBD_SET_REQUEST_BLOCK_SIZE: c_int = 1;

/// `nbd_set_request_structured_replies` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_SET_REQUEST_STRUCTURED_REPLIES: c_int = 1;

/// `nbd_set_strict_mode` is available (since LIBNBD_1.6).
pub const LIBNBD_HAVE_NBD_SET_STRICT_MODE: c_int = 1;

/// `nbd_set_tls` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_SET_TLS: c_int = 1;

/// `nbd_set_tls_certificates` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_SET_TLS_CERTIFICATES: c_int = 1;

/// `nbd_set_tls_psk_file` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_SET_TLS_PSK_FILE: c_int = 1;

/// `nbd_set_tls_username` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_SET_TLS_USERNAME: c_int = 1;

/// `nbd_set_tls_verify_peer` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_SET_TLS_VERIFY_PEER: c_int = 1;

/// `nbd_set_uri_allow_local_file` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_SET_URI_ALLOW_LOCAL_FILE: c_int = 1;

/// `nbd_set_uri_allow_tls` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_SET_URI_ALLOW_TLS: c_int = 1;

/// `nbd_set_uri_allow_transports` is available (since LIBNBD_1.2).
pub const LIBNBD_HAVE_NBD_SET_URI_ALLOW_TRANSPORTS: c_int = 1;

/// `nbd_shutdown` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_SHUTDOWN: c_int = 1;

/// `nbd_supports_tls` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_SUPPORTS_TLS: c_int = 1;

/// `nbd_supports_uri` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_SUPPORTS_URI: c_int = 1;

/// `nbd_trim` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_TRIM: c_int = 1;

/// `nbd_zero` is available (since LIBNBD_1.0).
pub const LIBNBD_HAVE_NBD_ZERO: c_int = 1;
