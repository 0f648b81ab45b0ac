//! Label values, each a closed set: a metric can only be labelled by a variant here, never by a
//! user or channel id or a string a client chose, so a scrape's size is bounded by the code.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// An enum of label values, its `as_str` and every variant (`ALL`, to create each series
/// up front: a series that exists from the start reads 0, not absent).
macro_rules! label_values {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value as exposed.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

label_values! {
    /// The contract's root field an HTTP GraphQL request executes; a document with several
    /// root fields, or any other, is `Other`.
    Operation {
        UserList => "userList",
        ChannelList => "channelList",
        GetMessageList => "getMessageList",
        UserCreate => "userCreate",
        UserGetToken => "userGetToken",
        TokenAuth => "tokenAuth",
        VerifyToken => "verifyToken",
        RefreshToken => "refreshToken",
        TextMessageSend => "textMessageSend",
        ChannelCreate => "channelCreate",
        OnNewChatMessage => "onNewChatMessage",
        /// Introspection, several root fields, or a document that did not parse.
        Other => "other",
    }
}

impl Operation {
    /// The label of root field `name`.
    pub fn of_field(name: &str) -> Self {
        Self::ALL
            .iter()
            .copied()
            .find(|op| *op != Self::Other && op.as_str() == name)
            .unwrap_or(Self::Other)
    }
}

label_values! {
    /// Why a GraphQL request over HTTP failed.
    ErrorKind {
        /// The body could not be read, was not JSON or UTF-8 (400).
        BadBody => "bad_body",
        /// The body passed `--max-body-bytes` (413).
        BodyTooLarge => "body_too_large",
        /// The body did not arrive within `--body-read-timeout-ms` (408).
        BodyTimeout => "body_timeout",
        /// Neither `application/json` nor `application/graphql` (415).
        MediaType => "media_type",
        /// A cross-origin page not allowed (403).
        Origin => "origin",
        /// A method other than GET, POST or OPTIONS (405).
        Method => "method",
        /// Refused before execution: nesting, depth or cost (`AppState::prepare`).
        Refused => "refused",
        /// Executed, with errors in the answer (validation, resolvers).
        Graphql => "graphql",
    }
}

label_values! {
    /// A throttle that refused a request.
    Limit {
        /// Logins per username (`MMSUB_LOGIN_RATE_PER_USER`).
        LoginPerUser => "login_per_user",
        /// Logins per client address (`MMSUB_LOGIN_RATE_PER_CLIENT`).
        LoginPerClient => "login_per_client",
        /// A client's logins being checked at once.
        LoginsInFlight => "logins_in_flight",
        /// Sign-ups per client address (`MMSUB_SIGNUP_RATE_PER_CLIENT`).
        SignupPerClient => "signup_per_client",
        /// Messages per user (`MMSUB_SEND_RATE_PER_USER`).
        SendPerUser => "send_per_user",
    }
}

label_values! {
    /// A GraphQL-over-WebSocket dialect, by its subprotocol.
    Protocol {
        /// `graphql-transport-ws`.
        TransportWs => "graphql-transport-ws",
        /// The legacy `graphql-ws` (subscriptions-transport-ws).
        Legacy => "graphql-ws",
    }
}

label_values! {
    /// Where an HTTP request went, by route template.
    Route {
        /// `/graphql/`.
        Graphql => "/graphql/",
        /// `/ws/graphql/`.
        WebSocket => "/ws/graphql/",
        /// `/healthz`.
        Healthz => "/healthz",
        /// `/readyz`.
        Readyz => "/readyz",
        /// `/metrics` (on the main port, when configured so).
        Metrics => "/metrics",
        /// Any other path (404).
        Other => "other",
    }
}

label_values! {
    /// How a call to Mattermost ended.
    MattermostStatus {
        /// A 2xx answer.
        Success => "2xx",
        /// A 4xx answer other than 429.
        ClientError => "4xx",
        /// 429: Mattermost's rate limit.
        RateLimited => "429",
        /// A 5xx answer.
        ServerError => "5xx",
        /// Any other status (1xx, 3xx).
        OtherStatus => "other",
        /// No answer within `--mattermost-timeout-ms`.
        Timeout => "timeout",
        /// No connection.
        Unreachable => "unreachable",
        /// An answer that could not be read.
        Unreadable => "unreadable",
    }
}

impl MattermostStatus {
    /// The label of an HTTP answer's status.
    pub fn of_code(code: u16) -> Self {
        match code {
            429 => Self::RateLimited,
            200..=299 => Self::Success,
            400..=499 => Self::ClientError,
            500..=599 => Self::ServerError,
            _ => Self::OtherStatus,
        }
    }
}

label_values! {
    /// A read the history tier serves.
    HistoryRead {
        /// A `getMessageList` page.
        Page => "page",
        /// An `afterMessageId` resume.
        Resume => "resume",
        /// A channel's last message in `channelList`.
        LastMessage => "last_message",
    }
}

label_values! {
    /// How a history query ended.
    QueryOutcome {
        /// It answered.
        Ok => "ok",
        /// It failed or timed out.
        Error => "error",
    }
}

/// `{read}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HistoryReadLabel {
    /// Which read.
    pub read: HistoryRead,
}

/// `{outcome}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// How it ended.
    pub outcome: QueryOutcome,
}

/// `{method, route, status}` of a call to Mattermost. `route` is the path's template
/// (`/users/:id`): its fixed words come from this server's code, every other segment is `:id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MattermostLabel {
    /// `GET`, `POST`, `PUT`, `DELETE` (anything else is `other`).
    pub method: &'static str,
    /// The route template.
    pub route: String,
    /// How it ended.
    pub status: MattermostStatus,
}

/// `{route}` of a call to Mattermost.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MattermostRouteLabel {
    /// The route template.
    pub route: String,
}

/// `{operation}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OperationLabel {
    /// The root field.
    pub operation: Operation,
}

/// `{kind}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ErrorKindLabel {
    /// What went wrong.
    pub kind: ErrorKind,
}

/// `{limit}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LimitLabel {
    /// Which throttle.
    pub limit: Limit,
}

/// `{protocol}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ProtocolLabel {
    /// The dialect.
    pub protocol: Protocol,
}

/// `{route}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabel {
    /// The route template.
    pub route: Route,
}

/// `{code}`: a WebSocket close code this server sends (the closed set the gateway registers
/// from `gateway/src/close.rs`), or `other`. Made once per code at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CloseLabel {
    /// The close code, as decimal text.
    pub code: String,
}

/// `{partition}`: a partition of the topic (as many as the topic has, set by its operator).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PartitionLabel {
    /// The partition number.
    pub partition: i32,
}
