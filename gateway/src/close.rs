//! Every WebSocket close code this server sends, in one place (the README lists them too).

/// Normal closure (client sent `connection_terminate` or a close frame).
pub const NORMAL: u16 = 1000;
/// The server is shutting down.
pub const GOING_AWAY: u16 = 1001;
/// Malformed WebSocket framing (reserved bits, bad continuation, fragmented control frame...).
pub const PROTOCOL_ERROR: u16 = 1002;
/// A binary message on the legacy protocol, which only carries JSON text.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// A text message that is not valid UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// A frame or message over the configured size limit.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// Slow consumer: more events queued for this connection than its send-queue limit. Nothing was
/// skipped before this close; reconnect (and resubscribe) to continue.
pub const SLOW_CONSUMER: u16 = 1013;

// graphql-transport-ws, as its PROTOCOL.md defines them.
/// A message the protocol does not allow, or malformed.
pub const BAD_REQUEST: u16 = 4400;
/// `subscribe` before the connection was acknowledged.
pub const UNAUTHORIZED: u16 = 4401;
/// The credentials of `connection_init` were refused, or the token expired.
pub const FORBIDDEN: u16 = 4403;
/// The client offered no subprotocol this server speaks.
pub const SUBPROTOCOL_NOT_ACCEPTABLE: u16 = 4406;
/// No `connection_init` within the init timeout.
pub const INIT_TIMEOUT: u16 = 4408;
/// A `subscribe` reused the id of a running operation.
pub const SUBSCRIBER_EXISTS: u16 = 4409;
/// A second `connection_init`.
pub const TOO_MANY_INIT: u16 = 4429;

/// Every code above: the series `mmsub_ws_closes_total` shows from the start.
pub const ALL: &[u16] = &[
    NORMAL,
    GOING_AWAY,
    PROTOCOL_ERROR,
    UNSUPPORTED_DATA,
    INVALID_PAYLOAD,
    MESSAGE_TOO_BIG,
    SLOW_CONSUMER,
    BAD_REQUEST,
    UNAUTHORIZED,
    FORBIDDEN,
    SUBPROTOCOL_NOT_ACCEPTABLE,
    INIT_TIMEOUT,
    SUBSCRIBER_EXISTS,
    TOO_MANY_INIT,
];
