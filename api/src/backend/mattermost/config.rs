//! Where Mattermost is and how to talk to it.

use std::time::Duration;

use super::RestLimits;

/// Where Mattermost is and how to talk to it: the original `.env` names, plus limits.
#[derive(Clone)]
pub struct MattermostConfig {
    /// `MATTERMOST_SERVER_URL`
    pub server_url: String,
    /// `MATTERMOST_ADMIN_LOGIN_ID`
    pub admin_login_id: String,
    /// `MATTERMOST_ADMIN_LOGIN_PASSWORD`
    pub admin_password: String,
    /// `MATTERMOST_TEAM_IDENTIFIER`: the team's name or id.
    pub team: String,
    /// Timeouts and rate-limit waits of the REST client.
    pub limits: RestLimits,
    /// How long a user's name, email and role are reused for message authors.
    pub user_cache_ttl: Duration,
    /// How long `userList`'s total count is reused.
    pub user_count_ttl: Duration,
}

impl std::fmt::Debug for MattermostConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MattermostConfig")
            .field("server_url", &self.server_url)
            .field("admin_login_id", &self.admin_login_id)
            .field("team", &self.team)
            .field("limits", &self.limits)
            .finish_non_exhaustive() // never the password
    }
}

impl MattermostConfig {
    /// The configuration with default limits and cache lifetimes.
    pub fn new(server_url: &str, admin_login_id: &str, admin_password: &str, team: &str) -> Self {
        Self {
            server_url: server_url.to_owned(),
            admin_login_id: admin_login_id.to_owned(),
            admin_password: admin_password.to_owned(),
            team: team.to_owned(),
            limits: RestLimits::default(),
            user_cache_ttl: Duration::from_secs(300),
            user_count_ttl: Duration::from_secs(10),
        }
    }
}
