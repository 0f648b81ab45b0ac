//! The history tier's settings, parsed once: each has a flag and an environment variable in
//! the `mmsub` binary (`--scylla-*`, `MMSUB_SCYLLA_*`).

use std::time::Duration;

use scylla::statement::Consistency;

/// How the keyspace is replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// `SimpleStrategy` with this factor: development and single-datacenter tests.
    Simple(u32),
    /// `NetworkTopologyStrategy`, a factor per datacenter: production.
    NetworkTopology(Vec<(String, u32)>),
}

impl Replication {
    /// Parses `simple:1` or `dc1:3,dc2:3`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(factor) = text.strip_prefix("simple:") {
            let factor = factor
                .parse()
                .map_err(|_| format!("replication {text}: simple:N needs a number"))?;
            return Ok(Replication::Simple(factor));
        }
        let mut datacenters = Vec::new();
        for part in text.split(',') {
            let (dc, factor) = part
                .split_once(':')
                .ok_or_else(|| format!("replication {text}: write simple:N or DC:N,DC:N"))?;
            let factor = factor
                .trim()
                .parse()
                .map_err(|_| format!("replication {text}: {dc} needs a number"))?;
            if dc.trim().is_empty()
                || !dc
                    .trim()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
            {
                return Err(format!(
                    "replication {text}: {dc:?} is not a datacenter name"
                ));
            }
            datacenters.push((dc.trim().to_string(), factor));
        }
        Ok(Replication::NetworkTopology(datacenters))
    }

    /// The CQL map literal of `CREATE KEYSPACE … WITH replication = …`.
    pub fn cql(&self) -> String {
        match self {
            Replication::Simple(factor) => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}")
            }
            Replication::NetworkTopology(datacenters) => {
                let factors: Vec<String> = datacenters
                    .iter()
                    .map(|(dc, factor)| format!("'{dc}': {factor}"))
                    .collect();
                format!(
                    "{{'class': 'NetworkTopologyStrategy', {}}}",
                    factors.join(", ")
                )
            }
        }
    }
}

/// Parses a consistency level's CQL name (`LOCAL_QUORUM`, `ONE`, …).
pub fn parse_consistency(text: &str) -> Result<Consistency, String> {
    Ok(match text.trim().to_ascii_uppercase().as_str() {
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        other => return Err(format!("unknown consistency level {other}")),
    })
}

/// Everything the history store needs to connect and how it keeps data.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// The keyspace (created if missing).
    pub keyspace: String,
    /// Its replication.
    pub replication: Replication,
    /// The datacenter to prefer (production: the node's own).
    pub local_datacenter: Option<String>,
    /// Consistency of reads.
    pub read_consistency: Consistency,
    /// Consistency of writes.
    pub write_consistency: Consistency,
    /// Each request's timeout; a read that passes it falls back to Mattermost.
    pub request_timeout: Duration,
    /// How long posts are kept (the tables' TTL).
    pub retention: Duration,
    /// The time span of one partition of a channel's posts.
    pub bucket_width: Duration,
    /// `PasswordAuthenticator` credentials.
    pub credentials: Option<(String, String)>,
    /// TLS to the nodes; plaintext when `None`.
    pub tls: Option<crate::tls::Tls>,
}

impl HistoryConfig {
    /// Settings for `nodes` with the development defaults (`SimpleStrategy` 1, `LOCAL_ONE`
    /// reads and `LOCAL_QUORUM` writes, 30 days of history in 1-day buckets).
    pub fn development(nodes: Vec<String>) -> Self {
        HistoryConfig {
            nodes,
            keyspace: "mmsub".into(),
            replication: Replication::Simple(1),
            local_datacenter: None,
            read_consistency: Consistency::LocalOne,
            write_consistency: Consistency::LocalQuorum,
            request_timeout: Duration::from_secs(2),
            retention: Duration::from_secs(30 * 24 * 3600),
            bucket_width: Duration::from_secs(24 * 3600),
            credentials: None,
            tls: None,
        }
    }

    /// Checks the values against each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("--scylla-nodes names no node".into());
        }
        if !self
            .keyspace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || self.keyspace.is_empty()
            || self.keyspace.len() > 48
        {
            return Err(format!(
                "--scylla-keyspace {:?}: letters, digits and _ only, at most 48",
                self.keyspace
            ));
        }
        if self.bucket_width < Duration::from_secs(60) {
            return Err("--scylla-bucket-width must be at least 60 s".into());
        }
        if self.retention < self.bucket_width {
            return Err("--scylla-retention must be at least one bucket wide".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_parses_both_strategies() {
        assert_eq!(
            Replication::parse("simple:1").unwrap(),
            Replication::Simple(1)
        );
        let nts = Replication::parse("eu:3, us:3").unwrap();
        assert_eq!(
            nts.cql(),
            "{'class': 'NetworkTopologyStrategy', 'eu': 3, 'us': 3}"
        );
        assert!(Replication::parse("eu").is_err());
        assert!(Replication::parse("e'u:3").is_err());
    }
}
